"""The dashboard in a real terminal (tmux): what a user sees at 100×30 and 80×24."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.tmux_support import Tmux

pytestmark = [pytest.mark.tmux, pytest.mark.timeout(300)]
APP = f"{Path(sys.executable).parent / 'numatop-llm'}"


def test_demo_in_a_100x30_terminal() -> None:
    with Tmux(f"{APP} --demo --speed 3", 100, 30) as t:
        screen = t.wait_for("seedbox-8581c", 20)
        assert "8 nodes 120 CPUs 2 sockets" in screen
        assert "TP2 PP1 bind auto KV 4G" in screen
        # workers fill their nodes; the planner marks both nodes
        # the planner marks both bind nodes OOM as soon as the configuration is known
        screen = t.wait_for(" OOM ", 30)
        screen = t.wait_for("Worker_TP1", 30)  # the workers' bytes appear in the memory legend
        rows = {line.split()[1]: line.split()[2] for line in screen.splitlines() if line.startswith("│ n")}
        assert rows["n0"].count("0") >= 12 and rows["n1"].count("1") >= 12, rows
        screen = t.wait_for("engine exited (signal 9 at 12:03:30)", 30)
        t.send("2")
        screen = t.wait_for("Worker_TP1", 10)
        # the last snapshot of the tree: TP0 already killed, TP1 still bound to node 1
        assert "bind:1" in screen and "EngineCore" in screen
        t.send("?")
        t.wait_for("where a vLLM CPU engine's threads and memory live", 10)
        t.send("Escape")
        time.sleep(0.5)  # else the terminal reads Esc q as alt+q
        t.send("q")
        screen = t.wait_for("[exited rc=0]", 15)
        assert "Traceback" not in screen


def test_demo_what_if_in_an_80x24_terminal() -> None:
    with Tmux(f"{APP} --demo --speed 2", 80, 24) as t:
        t.wait_for(" OOM ", 40)
        t.send("w")
        screen = t.wait_for("Prediction:", 20)
        assert "FITS" in screen
        assert all(len(line) <= 80 for line in screen.splitlines())
        t.send("Escape")
        time.sleep(0.5)
        t.wait_for("NUMA map", 10)
        t.send("q")
        t.wait_for("[exited rc=0]", 15)


def test_no_color_still_tells_ranks_and_verdicts_apart() -> None:
    import re

    with Tmux(f"{APP} --demo --speed 3", 80, 24, env={"NO_COLOR": "1"}) as t:
        t.wait_for("Worker_TP1", 40)
        screen = t.wait_for(" OOM ", 10)
        coloured = t.capture(escapes=True)
        # Textual turns every colour into a grey under NO_COLOR: no hue may reach the terminal
        greys = {0, 7, 8, 15, 16, 231, *range(232, 256)}
        found = re.findall(r"\x1b\[(?:[0-9]+;)*?([34]8);5;([0-9]+)", coloured)
        assert len(found) > 20  # the screen is drawn with (grey) colours: the check below has something to check
        for _, idx in found:
            assert int(idx) in greys, f"colour {idx} on a NO_COLOR screen"
        for r, g, b in re.findall(r"[34]8;2;([0-9]+);([0-9]+);([0-9]+)", coloured):
            assert r == g == b, f"colour {r},{g},{b} on a NO_COLOR screen"
        rows = {line.split()[1]: line.split()[2] for line in screen.splitlines() if line.startswith("│ n")}
        assert rows["n0"].count("0") >= 12 and rows["n1"].count("1") >= 12, rows
        t.send("q")
        t.wait_for("[exited rc=0]", 15)


@pytest.mark.vllm
def test_attached_to_a_real_tp2_engine(vllm_engine_tp2) -> None:
    eng = vllm_engine_tp2
    with Tmux(f"{APP} --pid {eng.pid}", 100, 30) as t:
        screen = t.wait_for(f"engine {eng.pid}", 60)
        assert "TP2 PP1" in screen
        t.send("2")
        screen = t.wait_for("Worker_TP1", 30)
        assert "Worker_TP0" in screen and "EngineCore" in screen
        # both workers' memory is bound (numa_maps), shown per process
        screen = t.wait_for("bind:", 30)
        assert "Worker_TP0" in screen, screen
        t.send("q")
        t.wait_for("[exited rc=0]", 15)
