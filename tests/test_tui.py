"""The dashboard driven like a user drives it: keys in, screen text out (Textual pilot)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from numatop_llm.dashboard.app import NumatopApp
from numatop_llm.demo.seedbox import write_box_sysfs
from numatop_llm.monitor.sources import LiveSource, ReplaySource
from numatop_llm.probes.roots import SysRoots
from numatop_llm.recording import Recorder, Recording
from numatop_llm.widgets.numa_map import NumaMap
from numatop_llm.widgets.processes import ProcessTable, ThreadTable
from tests.tui_support import (
    demo_frames,
    demo_upto,
    fixture_snapshots,
    replay_app,
    screen_text,
    settle,
    until_replayed,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


async def test_demo_story_ends_with_the_kill_explained() -> None:
    app = replay_app(list(demo_frames()))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        text = screen_text(app)
        assert "engine exited (signal 9 at 12:03:30)" in text
        assert "Worker_TP0 was OOM-killed" in text
        # the kernel's reason, in words, in the diagnoses
        first = app.state.findings[0]
        assert first.severity == "critical" and "strictly bound (membind) to node 0" in first.text
        assert "it had 28.6 GiB resident" in first.text
        assert app.state.exit is not None and app.state.exit.kill is not None
        assert app.state.exit.kill.constraint == "CONSTRAINT_MEMORY_POLICY"


async def test_overview_at_80x24_shows_ranks_on_their_nodes_and_the_coming_oom() -> None:
    app = replay_app(demo_upto(29))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_replayed(pilot)
        text = screen_text(app)
        lines = text.splitlines()
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        assert "engine 4242 DeepSeek-R1-Distill-Qwen-32B TP2 PP1 bind auto KV 4G" in text
        # rank 0's threads fill node 0's CPUs, rank 1's node 1's
        assert any("n0  000000000000000" in line for line in lines)
        assert any("n1  111111111111111" in line for line in lines)
        # both bind nodes are marked: the planner says neither rank fits
        assert sum(1 for line in lines if "OOM" in line and "G/31." in line) == 2
        assert "it will be OOM-killed (-9)" in text


async def test_keys_pause_interval_distances_tabs_help_quit() -> None:
    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        await pilot.press("p")
        assert "PAUSED (p resumes)" in screen_text(app)
        await pilot.press("p")
        assert "PAUSED" not in screen_text(app)
        await pilot.press("plus")
        assert app.interval == 2.0 and "every 2s" in screen_text(app)
        await pilot.press("minus", "minus", "minus")
        assert app.interval == 0.5
        await pilot.press("d")
        await settle(pilot)
        text = screen_text(app)
        assert "NUMA distances" in text and "10 local" in text
        row0 = next(line for line in text.splitlines() if line.strip("│ ").startswith("n0 ") and " 10 " in line)
        assert row0.strip("│ ").split()[1:9] == ["10", "12", "12", "12", "21", "21", "21", "21"]
        await pilot.press("d")
        await pilot.press("3")
        await settle(pilot)
        assert "used memory per node" in screen_text(app)
        await pilot.press("question_mark")
        await settle(pilot)
        assert "where a vLLM CPU engine's threads and memory live" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert "where a vLLM CPU engine's threads" not in screen_text(app)
        await pilot.press("q")
        await settle(pilot)
    assert app.return_code == 0


async def test_processes_threads_sort_and_filter() -> None:
    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        await pilot.press("2")
        await settle(pilot)
        procs = app.query_one(ProcessTable)
        assert procs.row_count == 5  # API server, EngineCore, resource tracker, two workers
        text = screen_text(app)
        for word in ("API server", "EngineCore", "Worker_TP0", "Worker_TP1", "bind:0", "bind:1"):
            assert word in text
        # move to Worker_TP1: its threads show, all on node 1
        await pilot.press("down", "down", "down")
        await settle(pilot)
        threads = app.query_one(ThreadTable)
        assert threads.row_count == 47
        nodes = {threads.get_row_at(i)[4].plain for i in range(threads.row_count)}
        assert nodes == {"1"}
        # sort by TID: ascending
        await pilot.press("s")
        await settle(pilot)
        assert threads.sort_key == "TID"
        tids = [int(threads.get_row_at(i)[0].plain) for i in range(threads.row_count)]
        assert tids == sorted(tids)
        # filter: only Worker_TP0's row stays
        await pilot.press("slash", "T", "P", "0")
        await settle(pilot)
        assert procs.row_count == 1 and "Worker_TP0" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert procs.row_count == 5


async def test_threads_off_their_node_are_found_and_shown_red() -> None:
    # move six of TP0's threads to node 3's CPUs: a finding, a count, red rows
    snaps = demo_upto(20)
    last = snaps[-1]
    procs = []
    for p in last.engine.processes:
        if p.label == "Worker_TP0":
            ths = [
                t.model_copy(update={"cpu": 45 + i, "node": 3}) if 20 <= i < 26 else t for i, t in enumerate(p.threads)
            ]
            p = p.model_copy(update={"threads": tuple(ths)})
        procs.append(p)
    moved = last.model_copy(update={"engine": last.engine.model_copy(update={"processes": tuple(procs)})})
    app = replay_app([*snaps[:-1], moved])
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        assert "6 threads of Worker_TP0 run on node 3, memory is on node 0" in screen_text(app)
        await pilot.press("2")
        await settle(pilot)
        row = next(
            i
            for i in range(app.query_one(ProcessTable).row_count)
            if "Worker_TP0" in str(app.query_one(ProcessTable).get_row_at(i)[1])
        )
        assert app.query_one(ProcessTable).get_row_at(row)[6].plain == "6"


async def test_whatif_predicts_per_rank_and_refuses_oom_plans() -> None:
    from numatop_llm.widgets.whatif import WhatIfScreen

    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        await pilot.press("w")
        await wait_for(lambda: isinstance(app.screen, WhatIfScreen))
        screen = app.screen
        # it opens on the best plan the solver found (the running TP=2 does not fit)
        assert screen.plan is not None and screen.plan.verdict == "fits"
        await wait_for(lambda: bool(screen.candidates))
        # type the running configuration back: both ranks are predicted to be OOM-killed
        screen.load(screen.base)
        await settle(pilot)
        assert screen.plan.verdict == "oom"
        assert "OOM" in screen_text(app)
        await pilot.press("enter")  # the Relaunch button has focus: refused
        await settle(pilot)
        assert isinstance(app.screen, WhatIfScreen)
        # more ranks than nodes: vLLM's own refusal, before anything runs
        screen.query_one("#tp").value = "16"
        await settle(pilot)
        assert screen.plan.verdict == "error"
        screen.query_one("#tp").value = "x"
        await settle(pilot)
        assert "TP and PP must be whole numbers" in screen_text(app)
        screen.load(screen.base.model_copy(update={"tp": 4, "kv_gib": 4.0}))
        await settle(pilot)
        assert screen.plan.verdict == "fits"
        assert len(screen.plan.ranks) == 4
        # on a recording nothing is relaunched: Enter says so and stays
        screen.query_one("#go").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, WhatIfScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, WhatIfScreen)


async def test_sixteen_nodes_of_64_cpus_draw_compact(tmp_path: Path) -> None:
    roots = write_box_sysfs(tmp_path / "big")
    app = replay_app(fixture_snapshots(roots, "bigbox-16n"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_replayed(pilot)
        m = app.query_one(NumaMap)
        lines = [t.plain for t in m._lines(m.size.width - 2)]
        assert any("1 cell = " in line for line in lines)
        labels = [line.split()[0] for line in lines if line.startswith("n")]
        assert labels == [f"n{i}" for i in range(16)]
        assert all(len(line) <= m.size.width for line in lines)
        assert "16 nodes 1024 CPUs 4 sockets" in screen_text(app)


async def test_no_numa_sysfs_and_no_engine_still_opens(tmp_path: Path) -> None:
    # a kernel without NUMA: no node directory at all
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/online").write_text("0-3\n")
    (tmp_path / "proc").mkdir()
    app = replay_app(fixture_snapshots(SysRoots(proc=tmp_path / "proc", sys=tmp_path / "sys"), "tiny"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until_replayed(pilot)
        text = screen_text(app)
        # the kernel's view without NUMA: one node holding every CPU, memory from /proc/meminfo unknown
        assert "1 nodes 4 CPUs" in text
        assert any(line.strip("│ ").startswith("n0") for line in text.splitlines())
        assert "no engine attached" in text


def _child(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


TOUCH = "import time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(60)"


async def test_live_process_then_its_death_keeps_the_app_up() -> None:
    child = _child("numactl", "--membind=0", "--cpunodebind=0", sys.executable, "-c", TOUCH)
    try:
        time.sleep(0.8)
        app = NumatopApp(LiveSource(SysRoots(), child.pid, kernel_log=None), interval=0.5)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: app.state.engine is not None and app.state.samples >= 2)
            await pilot.press("2")
            await settle(pilot)
            text = screen_text(app)
            assert str(child.pid) in text and "bind:0" in text
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            await wait_for(lambda: not app.state.engine_alive and app.state.samples > 3)
            await settle(pilot)
            text = screen_text(app)
            assert "engine exited at" in text or f"process {child.pid} exited" in text
            # the last snapshot stays on screen
            assert str(child.pid) in text
            assert app.is_running
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


async def test_record_then_replay_shows_the_same_samples(tmp_path: Path) -> None:
    child = _child(sys.executable, "-c", TOUCH)
    path = tmp_path / "session.jsonl.gz"
    try:
        time.sleep(0.5)
        app = NumatopApp(LiveSource(SysRoots(), child.pid, kernel_log=None), interval=0.3, recorder=Recorder(path))
        async with app.run_test(size=(100, 30)):
            await wait_for(lambda: app.state.samples >= 3)
    finally:
        child.kill()
        child.wait(5)
    rec = Recording(path)
    snaps = rec.snapshots()
    assert len(snaps) >= 3 and rec.skipped == 0
    assert all(s.engine is not None and s.engine.root_pid == child.pid for s in snaps)
    app2 = NumatopApp(ReplaySource(snaps, speed=1000))
    async with app2.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        assert app2.state.samples == len(snaps)
        await pilot.press("2")
        await settle(pilot)
        assert str(child.pid) in screen_text(app2)


def test_a_damaged_recording_replays_what_it_can(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    frames = demo_upto(3)
    with path.open("w") as fh:
        fh.write(json.dumps({"format": "numatop-llm-recording", "version": 1}) + "\n")
        for s in frames:
            fh.write(s.model_dump_json() + "\n")
        fh.write('{"taken_at": 17, "topo')  # cut mid-line
    rec = Recording(path)
    assert len(rec.snapshots()) == len(frames) and rec.skipped == 1


def test_bundled_demo_is_what_the_generator_writes() -> None:
    from numatop_llm.demo.story import DEMO_FILE

    with gzip.open(DEMO_FILE, "rt") as fh:
        lines = fh.read().splitlines()[1:]
    want = [s.model_dump_json(exclude_defaults=True) for s in demo_frames()]
    assert lines == want, "app/data/demo.jsonl.gz is stale: run python -m numatop_llm.demo.story"


# -- the command line, as a user types it -----------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("NUMATOP_LLM_FORCE_TUI", None)
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--demo",), "the dashboard needs a terminal"),
        (("--pid", "999999999"), "no such process: 999999999"),
        (("--interval", "0"), "--interval must be between"),
        (("--demo", "--speed", "0"), "--speed must be above 0"),
        (("replay", "/nonexistent/rec.jsonl"), "no such recording"),
        (("--record", "/nonexistent/dir/x.jsonl", "--demo"), "cannot write /nonexistent/dir/x.jsonl"),
        (("--demo", "--colour"), "unrecognized arguments: --colour"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_replay_of_a_file_that_is_not_a_recording(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    r = _cli("replay", str(bad))
    assert r.returncode == 2 and "is not a numatop-llm recording" in r.stderr


def test_widgets_never_read_proc() -> None:
    """Widgets render what they are given: no probe readers, no file reads (checked on the code, not the text)."""
    import ast

    allowed_probes = {"numatop_llm.probes.models", "numatop_llm.probes.cpulist"}
    root = Path(__file__).resolve().parent.parent / "widgets"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 8
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numatop_llm.probes"):
                assert node.module in allowed_probes, (f.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(
                    a.name.startswith(("numatop_llm.probes", "os", "pathlib", "psutil")) for a in node.names
                ), f.name
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                assert name not in ("open", "read_text", "read_bytes", "listdir", "scandir"), (f.name, name)


def test_no_engine_on_this_machine_opens_the_demo_and_says_so(monkeypatch) -> None:
    from numatop_llm.commands.cli import build_parser
    from numatop_llm.commands.tui import build_source

    monkeypatch.setattr("numatop_llm.monitor.sources.discover_engines", lambda roots: [])
    source, note = build_source(build_parser().parse_args([]))
    assert not source.live and source.label.startswith("demo")
    assert note == "no vLLM engine found here: showing the bundled demo"
    # with a PID the user asked for that process: never the demo
    live, note = build_source(build_parser().parse_args(["--pid", str(os.getpid())]))
    assert live.live and live.attached_pid == os.getpid() and note is None
    live.close()


async def test_switching_demo_and_live_repeatedly_leaves_one_sampler_thread(monkeypatch) -> None:
    """D and L swap sources: each press stops (and joins) the old sampler before starting the next."""
    import threading

    monkeypatch.setattr("numatop_llm.monitor.sources.discover_engines", lambda roots: [])
    app = replay_app(demo_upto(29))

    def samplers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "numatop-llm-sampler" and t.is_alive()]

    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        for key in "LDLDDLLD":
            await pilot.press(key)
            await settle(pilot)
            assert len(samplers()) <= 1, [t.name for t in samplers()]
        await wait_for(lambda: app.state.samples >= 2)
        assert not app.source.live and "demo" in app.source.label
        assert len(samplers()) == 1
        await pilot.press("L")
        await wait_for(lambda: app.state.samples >= 1 and app.source.live)
        assert len(samplers()) == 1
    assert samplers() == []


async def test_diagnoses_take_their_colours_from_the_theme() -> None:
    """A critical finding's mark is drawn in the theme's error colour, and follows a theme change."""
    from numatop_llm.widgets.diagnoses import Diagnoses

    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        diag = app.query_one(Diagnoses)

        def mark_colour() -> tuple[int, int, int]:
            text = diag._last
            span = next(s for s in text.spans if text.plain[s.start : s.end].startswith("✖"))
            return tuple(span.style.color.triplet)

        before = mark_colour()
        assert before[0] > max(before[1], before[2]), before  # the theme's error colour: red
        app.theme = "textual-light" if app.theme != "textual-light" else "nord"
        await settle(pilot)
        after = mark_colour()
        assert after[0] > max(after[1], after[2]) and after != before, (before, after)
