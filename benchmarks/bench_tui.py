"""The dashboard's own cost in a real terminal (tmux): first frame, CPU at 1 Hz, memory.

Measured in one run, each against a baseline started the same way:

- first frame: from spawning ``numatop-llm --demo`` (and ``--pid`` on the synthetic tree) in a
  tmux pane to the first screen with data on it (the NUMA map's rows and the host line),
  polling ``capture-pane`` every 10 ms; median of ``--frames`` starts. Baselines: ``python -c
  "import textual"`` (wall) and a bare Textual app's first frame in the same kind of pane.
  Goal ≤ 1 s. Also the top import-time offenders (``python -X importtime``), and a check that
  neither vllm nor torch is imported (``sys.modules`` after the app's imports, and the running
  app's ``/proc/PID/maps``).
- steady state at 1 Hz: the app's CPU (``psutil``, user + system) over ``--seconds`` (60) after a
  warm-up, replaying a long recording at 1 Hz (the bundled demo, looped) and attached live to the
  synthetic tree (a parent + 8 children × 48 threads, 256–768 MiB each, every child's RSS moving).
  Goal ≤ 1% of one core. Baselines over the same window: ``top -b -d 1`` and a shell running
  ``numastat -p`` + ``ps -L -o tid,psr,pcpu`` on the tree every second.
- memory: the app's RSS after 30 s (goal ≤ 80 MB) against the bare Textual app's.

    .venv/bin/python -m benchmarks.bench_tui [--quick] [--seconds 60] [--frames 5]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.common import REPO, Table, Tmux, machine
from benchmarks.synthetic_engine import NotEnoughMemory, SyntheticEngine

APP = str(Path(sys.executable).parent / "numatop-llm")
ENV = {"NUMATOP_LLM_FORCE_TUI": "1"}
GOAL_FIRST_FRAME = 1.0
GOAL_CPU = 1.0
GOAL_RSS_MB = 80.0

BARE_APP = r"""
import sys
from textual.app import App
from textual.widgets import Static
class Bare(App):
    def compose(self):
        yield Static("bare textual app: first frame")
Bare().run()
"""

IMPORTS = (
    "import numatop_llm.commands.cli, numatop_llm.commands.tui, numatop_llm.monitor.sources, numatop_llm.dashboard.app"
)
NO_HEAVY = (
    IMPORTS + "\nimport sys\nheavy = sorted(m for m in sys.modules if m.split('.')[0] in ('vllm', 'torch'))\n"
    "print('heavy:', ','.join(heavy) or 'none')"
)


def data_on_screen(host: str):
    """The first frame with data: the host line and a NUMA map row are drawn."""

    def check(screen: str) -> bool:
        return host in screen and re.search(r"│ n0 ", screen) is not None

    return check


def long_recording(path: Path, seconds: float) -> int:
    """The bundled demo looped until it lasts ``seconds`` (1 s between samples); returns samples."""
    from numatop_llm.demo.story import DEMO_FILE
    from numatop_llm.recording import Recording, write_recording

    story = list(Recording(DEMO_FILE))
    span = story[-1].taken_at - story[0].taken_at + 1.0
    out = []
    k = 0
    while len(out) < seconds + 1:
        out.extend(s.model_copy(update={"taken_at": s.taken_at + k * span}) for s in story)
        k += 1
    write_recording(path, out[: int(seconds) + 1], source="benchmark: demo looped")
    return len(out[: int(seconds) + 1])


def first_frames(cmd: str, host: str, runs: int, timeout: float = 20.0) -> list[float]:
    times = []
    for _ in range(runs):
        with Tmux(cmd, env=ENV) as t:
            got = t.wait_for(data_on_screen(host), timeout)
            if got is not None:
                times.append(got)
    return times


def bare_first_frames(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        with Tmux(f"{sys.executable} -c {shlex.quote(BARE_APP)}") as t:
            got = t.wait_for(lambda s: "bare textual app: first frame" in s, 20)
            if got is not None:
                times.append(got)
    return times


def import_wall(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_offenders(n: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Where the dashboard's import time goes (``-X importtime``): the ``n`` slowest modules by
    their own time, and the time per top-level package (sum of its modules' own times), in ms."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", IMPORTS], cwd=REPO, capture_output=True, text=True)
    own: list[tuple[str, float]] = []
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)", line)
        if m:
            own.append((m.group(3), int(m.group(1)) / 1e3))
    packages: dict[str, float] = {}
    for name, t in own:
        top = name.split(".")[0]
        packages[top] = packages.get(top, 0.0) + t
    slowest = sorted(own, key=lambda x: -x[1])[:n]
    return slowest, sorted(packages.items(), key=lambda x: -x[1])[:n]


def heavy_modules() -> str:
    r = subprocess.run([sys.executable, "-c", NO_HEAVY], cwd=REPO, capture_output=True, text=True)
    return r.stdout.strip().removeprefix("heavy: ") or f"error: {r.stderr.strip()[-200:]}"


def maps_mention_heavy(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "/torch/" in text or "/vllm/" in text


def cpu_seconds(p: psutil.Process, children: bool = False) -> float:
    t = p.cpu_times()
    total = t.user + t.system
    if children:
        total += t.children_user + t.children_system
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="steady-state window")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the first frame before measuring")
    ap.add_argument("--frames", type=int, default=5, help="starts timed for the first frame")
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--threads", type=int, default=48)
    ap.add_argument("--quick", action="store_true", help="short windows and a small tree (for tests)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup, args.frames, args.children, args.threads = 3.0, 0.5, 1, 2, 8
    mib = (32, 64) if args.quick else (256, 768)
    if not shutil.which("tmux"):
        print("tmux is not installed: apt-get install tmux")
        return 2
    print(machine())
    heavy = heavy_modules()
    print(f"vllm/torch modules after the dashboard's imports: {heavy}")

    with tempfile.TemporaryDirectory(prefix="numatop-bench-") as tmp:
        rec = Path(tmp) / "long.jsonl.gz"
        n = long_recording(rec, args.warmup + args.seconds + 30)
        ENV["XDG_STATE_HOME"] = tmp  # the live app remembers engines here, not in ~/.local/state
        print(f"replay: the bundled demo looped, {n} samples 1 s apart")

        # first frame ----------------------------------------------------------------------
        t = Table(("first frame (spawn → data on screen)", 46), ("median s", 9), ("min s", 7), ("runs", 5))
        print()
        t.print_header()
        imp_runs = 1 if args.quick else max(3, args.frames)
        imp_textual = import_wall("import textual.app", imp_runs)
        imp_ours = import_wall(IMPORTS, imp_runs)
        bare = bare_first_frames(args.frames)
        demo = first_frames(f"{APP} --demo", "seedbox-8581c", args.frames)
        t.row("baseline: python -c 'import textual.app'", f"{imp_textual:.3f}", "-", imp_runs)
        t.row("baseline: bare Textual app, first frame", *_med(bare))
        t.row("python -c 'import <the dashboard's modules>'", f"{imp_ours:.3f}", "-", imp_runs)
        t.row("numatop-llm --demo", *_med(demo))

        try:
            eng_cm = SyntheticEngine(args.children, args.threads, mib, lifetime=600, own_parent=True)
            eng = eng_cm.__enter__()
        except NotEnoughMemory as exc:
            print(f"live runs skipped: {exc}")
            eng = None
        try:
            live: list[float] = []
            if eng is not None:
                live = first_frames(f"{APP} --pid {eng.root}", os.uname().nodename, args.frames)
                t.row(f"numatop-llm --pid (synthetic tree, {eng.total_mib / 1024:.1f} GiB)", *_med(live))
            slowest, packages = import_offenders(8)
            print("\nimport time of the dashboard's modules (python -X importtime), ms of each one's own time")
            print("  by package: " + ", ".join(f"{name} {ms:.0f}" for name, ms in packages))
            print("  slowest:    " + ", ".join(f"{name} {ms:.0f}" for name, ms in slowest))

            # steady state -----------------------------------------------------------------
            if eng is not None:
                eng.churn(True)
            print(
                f"\nsteady state at 1 Hz: CPU over {args.seconds:g} s after {args.warmup:g} s warm-up "
                f"(% of one core); RSS after ≥ 30 s"
            )
            t2 = Table(("process", 58), ("CPU %", 7), ("RSS MB", 8), ("first s", 8))
            t2.print_header()
            results = steady(args, rec, eng)
            for label, cpu, rss, first in results:
                t2.row(label, f"{cpu:.2f}", f"{rss:.1f}" if rss else "-", f"{first:.2f}" if first else "-")
        finally:
            if eng is not None:
                eng_cm.__exit__(None, None, None)

    ff = statistics.median(demo) if demo else float("inf")
    by = {label: (cpu, rss) for label, cpu, rss, _ in results}
    worst_cpu = max(cpu for label, (cpu, _) in by.items() if label.startswith("numatop-llm"))
    worst_rss = max(rss for label, (_, rss) in by.items() if label.startswith("numatop-llm"))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        f"\nfirst frame (--demo): {ff:.2f} s (goal ≤ {GOAL_FIRST_FRAME:.0f} s: {verdict(ff <= GOAL_FIRST_FRAME)}); "
        f"CPU at 1 Hz: ≤ {worst_cpu:.2f}% of one core (goal ≤ {GOAL_CPU:.0f}%: {verdict(worst_cpu <= GOAL_CPU)}); "
        f"RSS ≤ {worst_rss:.0f} MB (goal ≤ {GOAL_RSS_MB:.0f} MB: {verdict(worst_rss <= GOAL_RSS_MB)}); "
        f"vllm/torch imported: {heavy}"
    )
    return 0


def _med(times: list[float]) -> tuple[str, str, int]:
    if not times:
        return "timeout", "-", 0
    return f"{statistics.median(times):.3f}", f"{min(times):.3f}", len(times)


@dataclass
class Run:
    """One process measured in the steady-state window."""

    label: str
    command: str
    ready: Callable[[str], bool] | None = None  # its first frame, when it draws one
    env: dict[str, str] | None = None
    with_children: bool = False  # count the CPU of the commands it runs (a shell loop)
    pane: Tmux | None = None


def steady(args: argparse.Namespace, rec: Path, eng: SyntheticEngine | None) -> list[tuple[str, float, float, float]]:
    """Start everything at once, wait for the first frames, measure the same window for all."""
    runs = [Run("numatop-llm replay (demo looped, 1 Hz)", f"{APP} replay {rec}", data_on_screen("seedbox-8581c"), ENV)]
    if eng is not None:
        host = os.uname().nodename
        label = f"numatop-llm --pid (tree: {len(eng.pids)} procs, RSS moving)"
        runs.append(Run(label, f"{APP} --pid {eng.root}", data_on_screen(host), ENV))
        if shutil.which("numastat"):
            plist = " ".join(str(p) for p in eng.pids)
            loop = (
                f"while :; do numastat -p {plist} >/dev/null; "
                f"ps -L -o tid,psr,pcpu -p {plist.replace(' ', ',')} >/dev/null; sleep 1; done"
            )
            runs.append(
                Run(
                    "baseline: numastat -p + ps -L every 1 s (same tree)",
                    f"bash -c {shlex.quote(loop)}",
                    with_children=True,
                )
            )
    runs.append(Run("baseline: top -b -d 1 (whole machine)", "top -b -d 1"))
    bare = f"{sys.executable} -c {shlex.quote(BARE_APP)}"
    runs.append(Run("baseline: bare Textual app (idle)", bare, lambda s: "bare textual app" in s))
    out: list[tuple[str, float, float, float]] = []
    with ExitStack() as stack:
        for r in runs:
            r.pane = stack.enter_context(Tmux(r.command, env=r.env))
        firsts = {r.label: (r.pane.wait_for(r.ready, 30) if r.ready else None) for r in runs}
        time.sleep(args.warmup)
        procs = {r.label: psutil.Process(r.pane.pid) for r in runs}
        c0 = {r.label: cpu_seconds(procs[r.label], r.with_children) for r in runs}
        w0 = time.monotonic()
        rss: dict[str, float] = {}
        while time.monotonic() < w0 + args.seconds:
            for r in runs:  # RSS 30 s after the process started (or at the end of a shorter window)
                if r.label not in rss and time.monotonic() - r.pane.spawned_at >= 30:
                    rss[r.label] = procs[r.label].memory_info().rss / 1e6
            time.sleep(0.2)
        wall = time.monotonic() - w0
        for r in runs:
            cpu = (cpu_seconds(procs[r.label], r.with_children) - c0[r.label]) / wall * 100
            mem = rss.get(r.label) or procs[r.label].memory_info().rss / 1e6
            label = r.label
            if label.startswith("numatop-llm") and maps_mention_heavy(r.pane.pid):
                label += " [torch/vllm mapped!]"
            out.append((label, cpu, 0.0 if r.with_children else mem, firsts[r.label] or 0.0))
    return out


if __name__ == "__main__":
    sys.exit(main())
