"""What software can apply from a machine what-if (issue #17): a numactl prefix and CPU_VISIBLE_MEMORY_NODES
reach the relaunch diff; a BIOS change is never relaunched."""

from __future__ import annotations

import json
from pathlib import Path

from numatop_llm.launcher.system import LiveSystem
from tests.test_launcher_fakes import free_port
from tests.test_planner import TINY
from tests.test_relaunch_cli import cli, fake_vllm, state  # noqa: F401 - fixtures


def test_numactl_and_visible_nodes_reach_the_relaunch(fake_vllm, state):  # noqa: F811
    proc = fake_vllm.start(free_port())
    before = LiveSystem().tree(proc.pid)
    out = cli(
        state,
        "relaunch",
        "--pid",
        str(proc.pid),
        "--numactl=--interleave=0",
        "--visible-memory-nodes",
        "0",
        "--dry-run",
    )
    assert out.returncode in (0, 1), out.stderr
    text = out.stdout + out.stderr
    assert "numactl: (none) → --interleave=0" in text, text
    assert "env CPU_VISIBLE_MEMORY_NODES: (unset) → 0" in text, text
    assert "dry run: nothing changed" in text
    assert LiveSystem().tree(proc.pid) == before


def test_a_bios_change_is_not_relaunched(fake_vllm, state):  # noqa: F811
    (fake_vllm.model / "config.json").write_text(json.dumps(TINY))  # a model the planner can read
    proc = fake_vllm.start(free_port())
    before = LiveSystem().tree(proc.pid)
    out = cli(state, "relaunch", "--pid", str(proc.pid), "--nodes-per-socket", "1", "--yes")
    assert out.returncode in (0, 1), out.stderr
    assert "is a BIOS change: nothing was stopped or started" in out.stdout
    assert "--check-machine" in out.stdout and "machine:" in out.stdout
    saved = next(w for w in out.stdout.split() if "machine-whatif-" in w and w.endswith(".json"))
    assert Path(saved).is_file() and json.loads(Path(saved).read_text())["config"]["tp"] == 1
    # nothing was stopped or started
    assert LiveSystem().tree(proc.pid) == before and all(LiveSystem().alive(r) for r in before)
