"""Time of the planner's full ``--solve`` on the 8-node seed box (goal: ≤ 100 ms).

Printed, all measured in the same run:

- ``solve`` in process, cold (first call: empty shard caches) and warm (median of ``--rounds``),
  with the number of configurations planned;
- ``numatop-llm plan --demo --solve --json`` end to end in a fresh interpreter (imports, seed box
  sysfs written and read, solve, JSON);
- the baseline: ``python -c pass``, the bare interpreter start-up of the same Python. The ratios
  say how many interpreter start-ups each measurement costs.

    .venv/bin/python -m benchmarks.bench_planner [--rounds 20] [--cli-rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_MS = 100.0
REPO = Path(__file__).resolve().parent.parent


def wall(cmd: list[str], rounds: int) -> float:
    """Median wall seconds of running ``cmd``."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=False, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cli-rounds", type=int, default=5)
    args = ap.parse_args(argv)

    baseline = wall([sys.executable, "-c", "pass"], args.cli_rounds)

    from numatop_llm.demo.seedbox import seed_topology
    from numatop_llm.planner import seed_model, solve
    from numatop_llm.planner.solve import candidate_configs

    model, topo = seed_model(), seed_topology()
    t0, c0 = time.perf_counter(), time.process_time()
    cands = solve(model, topo, limit=1000)
    cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
    warm = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        solve(model, topo, limit=1000)
        warm.append(time.perf_counter() - t0)
    warm_med = statistics.median(warm)
    cli = wall([sys.executable, "-m", "numatop_llm", "plan", "--demo", "--solve", "--json"], args.cli_rounds)

    n_cfg = len(candidate_configs(model, topo, cands[0].config.model_copy(update={"tp": 1, "bind": "auto"})))
    print(f"machine: {platform.machine()} {platform.python_implementation()} {platform.python_version()}")
    print(
        f"seed box: {len(topo.nodes)} nodes, {len(topo.cpus_online)} CPUs; {len(cands)} plans ranked ({n_cfg} layouts)"
    )
    print(f"baseline python -c pass:         {baseline * 1e3:8.1f} ms")
    print(
        f"solve (cold, first call):        {cold * 1e3:8.1f} ms wall, {cold_cpu * 1e3:.1f} ms CPU  "
        f"({cold / baseline:.2f}x baseline)"
    )
    print(
        f"solve (warm, median of {args.rounds:>3}):     {warm_med * 1e3:8.1f} ms  ({warm_med / baseline:.2f}x baseline)"
    )
    print(f"plan --demo --solve --json (CLI): {cli * 1e3:7.1f} ms  ({cli / baseline:.2f}x baseline)")
    best = cands[0]
    print(f"best: {best.why}")
    ok = cold * 1e3 <= GOAL_MS
    print(f"goal solve ≤ {GOAL_MS:.0f} ms: {'met' if ok else 'MISSED'} (cold {cold * 1e3:.1f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
