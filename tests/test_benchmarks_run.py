"""The benchmark scripts still run: ``benchmarks/run_all.py --quick`` runs each one in its quick
mode (a small synthetic tree, short windows) and each must print its table with figures in it.

Not a performance test: timings on a shared 2-CPU machine say little, and the measured figures
live in the README. Takes about 40 s. Needs tmux (the dashboard's first frame and CPU are measured
in a tmux pane) and numactl's ``numastat`` (the baseline): in CI a missing one fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))
NUMBER = r"\d+\.\d+"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_benchmark_runs_in_quick_mode_and_prints_its_table() -> None:
    missing = [tool for tool in ("tmux", "numastat") if not shutil.which(tool)]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install tmux numactl)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = r.stdout
    assert r.returncode == 0 and "Traceback" not in out + r.stderr, out[-4000:] + r.stderr[-2000:]
    lines = out.splitlines()

    def row(prefix: str) -> str:
        found = [line for line in lines if line.startswith(prefix)]
        assert found, f"no row starting {prefix!r} in:\n{out[-3000:]}"
        return found[0]

    assert out.startswith("machine: nproc ")
    # sampling: absolute CPU/wall figures and ratios against the baseline measured in the same run
    assert re.search(rf"\s{NUMBER}\s+{NUMBER}\s+1\.00×", row("baseline: numastat -p + ps -L"))
    for case in ("ours: forced full refresh", "ours: TUI cadence at 1 Hz, tree at rest", "ours: exact rule"):
        assert re.search(rf"\s{NUMBER}\s+{NUMBER}\s+{NUMBER}×\s+{NUMBER}×", row(case)), row(case)
    assert "growth with threads" in out and "growth with touched memory" in out
    assert re.search(rf"^extrapolated\s+32 GiB resident .* ≈ {NUMBER} s", out, re.M)
    # the dashboard in tmux: a first frame was seen, CPU and RSS were measured
    assert re.search(rf"\s{NUMBER}\s+{NUMBER}\s+1$", row("numatop-llm --demo"))
    assert re.search(rf"\s{NUMBER}\s+{NUMBER}\s+{NUMBER}$", row("numatop-llm replay (demo looped, 1 Hz)"))
    assert "vllm/torch modules after the dashboard's imports: none" in out
    # planner and scrape print their verdicts
    assert "goal solve ≤ 100 ms" in out and "the goal:" in out
    summary = out[out.index("===== summary") :]
    for name in ("sampling", "tui", "planner", "scrape"):
        assert re.search(rf"^{name}\s+{NUMBER} s  ok", summary, re.M), summary
