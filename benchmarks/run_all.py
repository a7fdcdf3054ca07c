"""Run every benchmark in turn, print their tables, and a summary of their goal lines.

Not part of pytest (a full run takes ~6 minutes on 2 CPUs); ``tests/test_benchmarks_run.py`` runs
this with ``--quick`` so the scripts cannot rot. Each script runs in its own interpreter, from the
repository root, one after the other (they would disturb each other's timings).

    .venv/bin/python -m benchmarks.run_all [--quick] [--only sampling,tui] [--log FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import REPO, machine

#: name → (module, arguments for a full run, arguments for --quick)
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "sampling": ("benchmarks.bench_sampling", ["--scaling"], ["--quick", "--scaling"]),
    "tui": ("benchmarks.bench_tui", [], ["--quick"]),
    "planner": ("benchmarks.bench_planner", [], ["--rounds", "3", "--cli-rounds", "1"]),
    "scrape": (
        "benchmarks.bench_scrape",
        [],
        ["--children", "2", "--threads", "8", "--mib", "32", "--scrapes", "20", "--rounds", "3"],
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every script in its quick mode (about a minute)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    ap.add_argument("--log", type=Path, help="also write everything printed to this file")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    log = args.log.open("w") if args.log else None

    def say(text: str) -> None:
        print(text, flush=True)
        if log:
            log.write(text + "\n")

    say(machine())
    summary: list[tuple[str, float, int, list[str]]] = []
    for name in names:
        module, full, quick = SCRIPTS[name]
        cmd = [sys.executable, "-m", module, *(quick if args.quick else full)]
        say(f"\n===== {name}: {' '.join(cmd[1:])}")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        goals = []
        assert proc.stdout is not None
        for line in proc.stdout:
            say(line.rstrip("\n"))
            if "goal" in line:
                goals.append(line.strip())
        rc = proc.wait()
        summary.append((name, time.monotonic() - t0, rc, goals))
    say("\n===== summary")
    crashed = False
    for name, seconds, rc, goals in summary:
        state = {0: "ok", 1: "ok (a goal missed)"}.get(rc, f"FAILED (exit {rc})")
        crashed = crashed or rc not in (0, 1)
        say(f"{name:<9} {seconds:6.1f} s  {state}")
        for g in goals:
            say(f"          {g}")
    if log:
        log.close()
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
