"""CPU cost of a Prometheus scrape of ``numatop-llm export`` on the synthetic engine-like tree.

The exporter samples in a background thread and a scrape only serialises the latest sample, so
two costs matter and both are printed:

- scrape: CPU the exporter process spends serving one ``GET /metrics`` over HTTP (the client runs
  in another process, so its CPU is not counted);
- sample: CPU of one background sample in steady state (numa_maps reused under the shared
  ``NUMA_MAPS_MAX_AGE`` rule) and of a forced full read (every numa_maps walked).

Baselines measured in the same run: one fresh ``SnapshotReader.read()`` of the whole tree (every
numa_maps and thread read, what a naive exporter would do per scrape) and ``numastat -p PID…``.
Goal: ≤ 20 ms CPU per scrape.

    .venv/bin/python -m benchmarks.bench_scrape [--children 8 --threads 48 --mib 256 --scrapes 200] [--pid N]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

from benchmarks.synthetic_engine import SyntheticEngine
from numatop_llm.exporter import Exporter, serve
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import NUMA_MAPS_MAX_AGE, SnapshotReader

GOAL_MS = 20.0

CLIENT = r"""
import sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
size = 0
for _ in range(n):
    with urllib.request.urlopen(url) as r:
        size = len(r.read())
print(size)
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_per_call(fn, rounds: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of ``fn``, CPU of this process (all its threads)."""
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.process_time() - c0) / rounds, (time.perf_counter() - w0) / rounds


def measure_scrapes(url: str, scrapes: int) -> tuple[float, float, int]:
    """Server-side CPU and wall per scrape; the HTTP client is a separate process."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CLIENT, url, str(scrapes)], capture_output=True, text=True, check=True)
    return (time.process_time() - c0) / scrapes, (time.perf_counter() - w0) / scrapes, int(out.stdout)


def measure_numastat(pids: list[int], rounds: int) -> float | None:
    if not shutil.which("numastat"):
        return None
    plist = [str(p) for p in pids]
    c0 = _children_cpu()
    for _ in range(rounds):
        subprocess.run(["numastat", "-p", *plist], capture_output=True, check=False)
    return (_children_cpu() - c0) / rounds


def ms(x: float) -> str:
    return f"{x * 1e3:8.2f}"


def measure(roots: SysRoots, target: int, pids: list[int], args: argparse.Namespace) -> dict:
    """Every figure for the tree of ``target`` (``pids`` for the numastat baseline)."""
    nthreads = sum(len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.isdir(f"/proc/{p}"))
    print(f"        {len(pids)} processes, {nthreads} threads")

    # baselines: what a naive exporter would do per scrape
    def fresh_read() -> None:
        SnapshotReader(roots, target).read()

    base_read = cpu_per_call(fresh_read, max(3, args.rounds // 2))
    base_numastat = measure_numastat(pids, max(3, args.rounds // 4))

    ex = Exporter(roots, pid=target, interval=3600, remember=False, log=lambda _m: None)
    ex.sample_once()  # attach, open thread descriptors, first numa_maps reads

    def forced() -> None:
        ex.reader.read(numa_maps_max_age=0)

    sample_full = cpu_per_call(forced, max(3, args.rounds // 2))
    ex.sample_once()
    sample_steady = cpu_per_call(ex.sample_once, args.rounds)
    er = ex.reader.engine_reader
    server, _thread, port = serve(ex.registry, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        measure_scrapes(url, 5)  # warm
        scrape = measure_scrapes(url, args.scrapes)
    finally:
        server.shutdown()
        server.server_close()
        ex.stop()
    return {
        "scrape": scrape,
        "steady": sample_steady,
        "full": sample_full,
        "read": base_read,
        "numastat": base_numastat,
        "reused": er.numa_maps_reused if er else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--threads", type=int, default=48)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20, help="samples / baseline reads to average")
    ap.add_argument("--pid", type=int, help="measure on this running engine's tree instead of the synthetic one")
    args = ap.parse_args()

    print(
        f"machine: {platform.node()} · {os.cpu_count()} CPUs · Linux {platform.release()} "
        f"· Python {platform.python_version()}"
    )
    roots = SysRoots()
    if args.pid is not None:
        pids = [p.pid for p in SnapshotReader(roots, args.pid).read().engine.processes]
        print(f"target: the engine tree of pid {args.pid}")
        r = measure(roots, args.pid, pids, args)
    else:
        with SyntheticEngine(args.children, args.threads, args.mib, lifetime=600) as eng:
            print(f"target: synthetic engine, {args.children * args.mib} MiB touched")
            r = measure(roots, os.getpid(), eng.pids, args)
    scrape_cpu, scrape_wall, size = r["scrape"]
    sample_steady, sample_full, base_read, base_numastat = r["steady"], r["full"], r["read"], r["numastat"]
    reused = r["reused"]
    print()
    print(f"{'per call, ms':<58} {'CPU':>8} {'wall':>8}")
    print(f"{'scrape: GET /metrics served (' + str(size) + ' bytes)':<58} {ms(scrape_cpu)} {ms(scrape_wall)}")
    print(f"{'sample, steady (numa_maps reused, max age ' + f'{NUMA_MAPS_MAX_AGE:g} s)':<58} "
          f"{ms(sample_steady[0])} {ms(sample_steady[1])}")  # fmt: skip
    print(f"{'sample, every numa_maps re-read':<58} {ms(sample_full[0])} {ms(sample_full[1])}")
    print(f"{'baseline: one fresh SnapshotReader.read()':<58} {ms(base_read[0])} {ms(base_read[1])}")
    if base_numastat is not None:
        print(f"{'baseline: numastat -p (child CPU)':<58} {ms(base_numastat)} {'':>8}")
    print()
    print(f"scrape / fresh SnapshotReader.read(): {scrape_cpu / base_read[0]:.3f}×")
    if base_numastat:
        print(f"scrape / numastat -p: {scrape_cpu / base_numastat:.3f}×")
    worst = scrape_cpu + sample_full[0]
    print(
        f"scrape + one sample, if every scrape met a full numa_maps re-read: {worst * 1e3:.2f} ms "
        f"({worst / base_read[0]:.2f}× a fresh read)"
    )
    print(f"numa_maps reads reused during steady samples: {reused}")
    for interval in (1.0, 5.0):
        # every process's numa_maps is re-read at least once per NUMA_MAPS_MAX_AGE
        per_s = sample_steady[0] / interval + (sample_full[0] - sample_steady[0]) / NUMA_MAPS_MAX_AGE
        print(f"background sampler at --interval {interval:g}: {per_s * 100:.2f}% of one core")
    verdict = "meets" if scrape_cpu * 1e3 <= GOAL_MS else "MISSES"
    print(f"\n{verdict} the goal: {scrape_cpu * 1e3:.2f} ms CPU per scrape (goal ≤ {GOAL_MS:g} ms)")


if __name__ == "__main__":
    main()
