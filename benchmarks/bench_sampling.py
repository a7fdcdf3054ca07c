"""Sampling cost of numatop-llm against the tools people use today, measured in one run.

Target: a synthetic engine-like tree (``benchmarks/synthetic_engine.py``): a parent and 8 children
with ~48 threads each and 256 MiB–768 MiB touched (4 GiB in all), bounded in time, removed at exit.

- baseline: ``numastat -p PID…`` plus ``ps -L -o tid,psr,pcpu -p PID…`` doing the same job once;
  also each alone, and ``cat`` of every ``numa_maps`` (the kernel's page walk, which any reader of
  per-node process memory pays: numastat reads the same files);
- ours, forced full refresh: topology + node memory + every process's numa_maps + every thread;
- ours at the dashboard's cadence (``probes.snapshot.CADENCE``, what the TUI and the exporter use)
  at 1 Hz: 60 samples on a simulated 1 Hz clock (the cadence's ages and back-offs see 1 s between
  samples; the CPU is real), on the tree at rest and with every child's RSS moving (``churn``),
  and the same churn with the exact rule (no tolerance) for comparison;
- one process whose 1 GiB mapping straddles the kernel's 4 KiB numa_maps buffer: a whole-file
  ``read()`` walks it twice, ``probes.numa_maps`` reads in 3 KiB steps and walks it once.

``--scaling`` adds growth with threads (50, 500, 2000) and with touched memory (1, 2, 4 GiB; 8
with ``--max-gib 8`` when memory allows), the per-page cost, the extrapolation to 8 and 32 GiB,
and the 1 Hz cost with memory changing: reading every numa_maps every second against the
cost-aware cadence.

    .venv/bin/python -m benchmarks.bench_sampling [--quick] [--scaling] [--rounds 20] [--max-gib 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Table, machine, ms, ratio, run_cpu
from benchmarks.synthetic_engine import NotEnoughMemory, SyntheticEngine
from numatop_llm.probes.engine import EngineReader
from numatop_llm.probes.numa_maps import read_numa_maps_bytes
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import CADENCE, SnapshotReader

GOAL = 0.5
ROOTS = SysRoots()


class FakeClock:
    """A monotonic clock that moves only when told (the cadence sees 1 s between samples)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def threads_of(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{p}/task")) for p in pids if os.path.isdir(f"/proc/{p}"))


def measure_forced(root: int, rounds: int) -> tuple[float, float]:
    """(CPU s, wall s) per full refresh: topology, node memory, every numa_maps, every thread."""
    snap = SnapshotReader(ROOTS, root)
    snap.read()  # warm: opens the thread descriptors, reads static per-process facts
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        snap.refresh_topology()
        snap.read()
    return (time.process_time() - c0) / rounds, (time.perf_counter() - w0) / rounds


def measure_cadence(root: int, samples: int, cadence: dict, gap: float = 0.05) -> dict:
    """Steady state at 1 Hz under ``cadence``: CPU and wall per sample (averaged over ``samples``
    on a simulated clock), and how many numa_maps were read."""
    clock = FakeClock()
    snap = SnapshotReader(ROOTS, None)
    snap.engine_reader = EngineReader(ROOTS, root, clock=clock)
    snap.read(**cadence)  # the start-up read (every numa_maps is new) is not steady state
    er = snap.engine_reader
    reads0 = er.numa_maps_reads
    cpu = wall = 0.0
    for _ in range(samples):
        clock.now += 1.0
        time.sleep(gap)  # lets the tree's memory move between samples (not counted)
        c0, w0 = time.process_time(), time.perf_counter()
        snap.read(**cadence)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
    return {"cpu": cpu / samples, "wall": wall / samples, "reads": er.numa_maps_reads - reads0}


def baselines(pids: list[int], rounds: int) -> dict[str, tuple[float, float] | None]:
    plist = [str(p) for p in pids]
    out: dict[str, tuple[float, float] | None] = {"numastat": None, "ps": None, "both": None, "cat": None}
    if shutil.which("numastat"):
        out["numastat"] = run_cpu(["numastat", "-p", *plist], rounds)
    if shutil.which("ps"):
        out["ps"] = run_cpu(["ps", "-L", "-o", "tid,psr,pcpu", "-p", ",".join(plist)], rounds)
    if out["numastat"] and out["ps"]:
        out["both"] = (out["numastat"][0] + out["ps"][0], out["numastat"][1] + out["ps"][1])
    out["cat"] = run_cpu(["cat", *[f"/proc/{p}/numa_maps" for p in pids]], rounds)
    return out


STRADDLE = r"""
import ctypes, os, sys, time
mib = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT, FLAGS = 3, 0x22 | 0x100000  # read|write, private|anonymous|fixed-noreplace
big = libc.mmap(0x300000000000, mib << 20, PROT, FLAGS, -1, 0)
for i in range(0, mib << 20, 4096):
    ctypes.memset(big + i, 1, 1)
def big_line():
    data = open("/proc/self/numa_maps", "rb").read()
    start = data.find(b"300000000000 ")
    return start, data.find(b"\n", start)
pads = 0
while True:
    start, end = big_line()
    if start < 4096 <= end or start > 4096 or pads > 400:
        break
    # one more small mapping below the big one: its line comes first, the big line moves on
    a = libc.mmap(0x200000000000 + pads * 0x100000, 8192, PROT, FLAGS, -1, 0)
    ctypes.memset(a, 1, 1)
    pads += 1
print("ready" if start < 4096 <= end else "missed", start, end, flush=True)
sys.stdin.readline()
"""


def measure_straddle(mib: int, rounds: int) -> tuple[float, float] | None:
    """CPU per read of a numa_maps whose big mapping straddles the first 4 KiB buffer:
    (whole-file read(), probes' 3 KiB reads); None when the layout could not be made."""
    p = subprocess.Popen(
        [sys.executable, "-c", STRADDLE, str(mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        if not p.stdout.readline().startswith("ready"):
            return None
        path = f"/proc/{p.pid}/numa_maps"
        out = []
        for reader in (lambda: Path(path).read_bytes(), lambda: read_numa_maps_bytes(path)):
            reader()
            c0 = time.process_time()
            for _ in range(rounds):
                reader()
            out.append((time.process_time() - c0) / rounds)
        return out[0], out[1]
    finally:
        p.kill()
        p.wait()


def main_table(args: argparse.Namespace) -> None:
    samples = args.samples
    with SyntheticEngine(
        args.children, args.threads, (args.mib_low, args.mib_high), lifetime=600, own_parent=True
    ) as eng:
        pids = eng.pids
        print(
            f"target: synthetic tree, 1 parent + {args.children} children, {len(pids)} processes, "
            f"{threads_of(pids)} threads, {eng.total_mib / 1024:.2f} GiB touched "
            f"({args.mib_low}–{args.mib_high} MiB per child)"
        )
        print("ms per refresh (CPU = user + system of the process doing the work); × = ours / baseline")
        t = Table(("case", 62), ("CPU ms", 9), ("wall ms", 9), ("CPU ×", 7), ("wall ×", 7), ("numa_maps", 10))
        t.print_header()
        base = baselines(pids, args.base_rounds)
        both = base["both"]
        bc, bw = both if both else (None, None)
        t.row("baseline: numastat -p + ps -L -o tid,psr,pcpu", ms(bc), ms(bw), "1.00×", "1.00×")
        for key, label in (("numastat", "  numastat -p alone"), ("ps", "  ps -L alone")):
            v = base[key]
            t.row(label, ms(v[0]) if v else "-", ms(v[1]) if v else "-", ratio(v and v[0], bc), ratio(v and v[1], bw))
        cat = base["cat"]
        t.row(
            "  floor: cat every numa_maps (the kernel's page walk)",
            ms(cat[0]),
            ms(cat[1]),
            ratio(cat[0], bc),
            ratio(cat[1], bw),
        )
        fc, fw = measure_forced(eng.root, args.rounds)
        t.row("ours: forced full refresh (all numa_maps re-read)", ms(fc), ms(fw), ratio(fc, bc), ratio(fw, bw), "all")
        rest = measure_cadence(eng.root, samples, CADENCE)
        t.row(
            f"ours: TUI cadence at 1 Hz, tree at rest ({samples} s)",
            ms(rest["cpu"]),
            ms(rest["wall"]),
            ratio(rest["cpu"], bc),
            ratio(rest["wall"], bw),
            f"{rest['reads']} reads",
        )
        eng.churn(True)
        time.sleep(0.3)
        moving = measure_cadence(eng.root, samples, CADENCE)
        t.row(
            f"ours: TUI cadence at 1 Hz, RSS moving ({samples} s)",
            ms(moving["cpu"]),
            ms(moving["wall"]),
            ratio(moving["cpu"], bc),
            ratio(moving["wall"], bw),
            f"{moving['reads']} reads",
        )
        exact = measure_cadence(eng.root, samples, {**CADENCE, "numa_maps_tolerance": 0.0})
        t.row(
            f"ours: exact rule (no tolerance) at 1 Hz, RSS moving ({samples} s)",
            ms(exact["cpu"]),
            ms(exact["wall"]),
            ratio(exact["cpu"], bc),
            ratio(exact["wall"], bw),
            f"{exact['reads']} reads",
        )
        eng.churn(False)
    st = measure_straddle(args.straddle_mib, max(3, args.rounds // 4))
    if st is not None:
        print(
            f"\none numa_maps with a {args.straddle_mib} MiB mapping across the kernel's 4 KiB buffer: "
            f"whole-file read() {ms(st[0])} ms CPU, 3 KiB reads (probes) {ms(st[1])} ms CPU ({ratio(st[1], st[0])})"
        )
    if bc:
        print(
            f"\nforced full refresh: {fc / bc:.2f}× the baseline's CPU (goal ≤ {GOAL:.2f}×: "
            f"{'met' if fc / bc <= GOAL else 'MISSED'}); the page walk alone (cat) is {cat[0] / bc:.2f}×"
        )
        worst = max(rest["cpu"], moving["cpu"])
        print(
            f"TUI cadence at 1 Hz: {rest['cpu'] / bc:.2f}× at rest, {moving['cpu'] / bc:.2f}× with RSS moving "
            f"(goal ≤ {GOAL:.2f}×: {'met' if worst / bc <= GOAL else 'MISSED'}); "
            f"probe cost {worst * 100:.2f}% of one core at 1 Hz vs {bc * 100:.1f}% for numastat + ps every second"
        )


def scaling(args: argparse.Namespace) -> None:
    samples = max(10, args.samples // 2)
    print("\ngrowth with threads (1 parent + 8 children, 16 MiB each); ms per refresh")
    t = Table(
        ("threads", 9), ("forced CPU", 11), ("1 Hz CPU", 9), ("base CPU", 9), ("forced ×", 9), ("1 Hz µs/thread", 15)
    )
    t.print_header()
    for total in args.thread_counts:
        per = max(1, (total - 8) // 8)
        try:
            with SyntheticEngine(8, per, 16, lifetime=300, own_parent=True) as eng:
                n = threads_of(eng.pids)
                fc, _ = measure_forced(eng.root, max(3, args.rounds // 2))
                cad = measure_cadence(eng.root, samples, CADENCE, gap=0.01)
                base = baselines(eng.pids, args.base_rounds)["both"]
                t.row(
                    n,
                    ms(fc),
                    ms(cad["cpu"]),
                    ms(base[0]) if base else "-",
                    ratio(fc, base and base[0]),
                    f"{cad['cpu'] / n * 1e6:.1f}",
                )
        except NotEnoughMemory as exc:
            print(f"{total} threads: skipped ({exc})")

    print("\ngrowth with touched memory (4 children, 4 threads each); numa_maps walks page tables")
    print("1 Hz columns: % of one core, memory changing every second (every child's RSS moves)")
    t = Table(
        ("touched", 10),
        ("forced CPU", 11),
        ("base CPU", 9),
        ("forced ×", 9),
        ("ns/page", 8),
        ("every 1 s", 10),
        ("cost-aware", 11),
        ("TUI cadence", 12),
    )
    t.print_header()
    per_page = []
    for gib in args.gib_sizes:
        if gib > args.max_gib:
            continue
        mib = int(gib * 1024 / 4)
        try:
            with SyntheticEngine(4, 4, mib, lifetime=300, own_parent=True, parent_mib=16, churn_mib=2) as eng:
                fc, _ = measure_forced(eng.root, max(3, args.rounds // 4))
                base = baselines(eng.pids, max(2, args.base_rounds // 2))["both"]
                pages = eng.total_mib * 256
                cat = run_cpu(["cat", *[f"/proc/{p}/numa_maps" for p in eng.pids]], 3)[0]
                per_page.append((pages, cat))
                eng.churn(True)
                time.sleep(0.3)
                no_cadence = {"numa_maps_max_age": 30.0}  # exact rule, no back-off: re-read whenever RSS moved
                every = measure_cadence(eng.root, samples, no_cadence, gap=0.02)
                aware = measure_cadence(eng.root, samples, {**CADENCE, "numa_maps_tolerance": 0.0}, gap=0.02)
                tui = measure_cadence(eng.root, samples, CADENCE, gap=0.02)
                t.row(
                    f"{eng.total_mib / 1024:.1f} GiB",
                    ms(fc),
                    ms(base[0]) if base else "-",
                    ratio(fc, base and base[0]),
                    f"{cat / pages * 1e9:.0f}",
                    f"{every['cpu'] * 100:.2f}%",
                    f"{aware['cpu'] * 100:.2f}%",
                    f"{tui['cpu'] * 100:.2f}%",
                )
        except NotEnoughMemory as exc:
            print(f"{gib} GiB: skipped ({exc})")
    if per_page:
        pages, cat = per_page[-1]
        ns = cat / pages * 1e9
        for gib in (8, 32, 256):
            walk = gib * 2**18 * ns / 1e9
            print(
                f"extrapolated {gib:>3} GiB resident (at {ns:.0f} ns/page): one full numa_maps read ≈ {walk:.2f} s; "
                f"re-read every second = {min(walk, 1.0) * 100:.0f}% of a core "
                f"{'(cannot keep up)' if walk > 1 else ''}; cost-aware cadence ≤ "
                f"{100 / (1 + CADENCE['numa_maps_cost_factor']):.1f}% while memory changes, ≤ "
                f"{100 / (1 + CADENCE['numa_maps_idle_factor']):.1f}% at rest"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=8)
    ap.add_argument("--threads", type=int, default=48)
    ap.add_argument("--mib-low", type=int, default=256, help="MiB touched by the first child")
    ap.add_argument("--mib-high", type=int, default=768, help="MiB touched by the last child")
    ap.add_argument("--rounds", type=int, default=20, help="forced refreshes measured")
    ap.add_argument("--base-rounds", type=int, default=8, help="baseline runs measured")
    ap.add_argument("--samples", type=int, default=60, help="1 Hz samples measured at the TUI cadence")
    ap.add_argument("--straddle-mib", type=int, default=1024)
    ap.add_argument("--scaling", action="store_true", help="also measure growth with threads and memory")
    ap.add_argument("--max-gib", type=float, default=4, help="largest touched memory in --scaling")
    ap.add_argument("--quick", action="store_true", help="small tree and few rounds (seconds; for tests)")
    args = ap.parse_args(argv)
    args.thread_counts = (50, 500, 2000)
    args.gib_sizes = (1, 2, 4, 8)
    if args.quick:
        args.children, args.threads, args.mib_low, args.mib_high = 2, 8, 32, 64
        args.rounds, args.base_rounds, args.samples, args.straddle_mib = 3, 2, 6, 64
        args.thread_counts, args.gib_sizes, args.max_gib = (50, 100), (0.125, 0.25), 0.25
    print(machine())
    try:
        main_table(args)
        if args.scaling:
            scaling(args)
    except NotEnoughMemory as exc:
        print(f"skipped: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
