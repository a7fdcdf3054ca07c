"""A synthetic engine-like process tree for benchmarks: a parent and N children, each with many
threads and touched memory, shaped like a vLLM CPU engine (API server → workers).

Bounded in time: every process exits after ``lifetime`` seconds, or when its parent dies; the
context manager kills whatever is left on exit. Refuses to start when the machine does not have
the memory (``MemAvailable`` minus a margin), so a benchmark never pushes other work into OOM.

    with SyntheticEngine(children=8, threads=48, mib=256) as eng:
        eng.pids  # parent first
        eng.root  # the PID to attach to (the tree's root)

``mib`` is per child, or a ``(low, high)`` range spread evenly over the children. With
``own_parent`` the tree's root is a separate small process (like an API server) instead of the
calling process, so a dashboard can be attached to it with ``--pid``. ``eng.churn(True)`` makes
every child replace a small buffer continuously (its RSS moves, as a live engine's does).
``thp`` backs the touched memory with transparent huge pages (``madvise``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

CHILD = r"""
import mmap, os, random, signal, sys, threading, time
mib, threads, lifetime, ppid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
churn_mib, thp = float(sys.argv[5]), sys.argv[6] == "1"
size = mib * 2**20
if thp:
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
else:
    buf = bytearray(size)
for i in range(0, size, 4096):
    buf[i] = 1
churning = [False]
def toggle(signum, frame):
    churning[0] = not churning[0]
signal.signal(signal.SIGUSR1, toggle)
stop = threading.Event()
# idle like gloo/OpenMP helpers between steps: blocked, no wake-ups
ts = [threading.Thread(target=stop.wait, daemon=True) for _ in range(threads - 1)]
for t in ts:
    t.start()
print("ready", flush=True)
deadline = time.monotonic() + lifetime
spare = None
while time.monotonic() < deadline and os.getppid() == ppid:
    if churning[0] and churn_mib > 0:
        # replace a mapping of a random size: the resident page count changes between samples
        # (mmap/munmap, not the heap: glibc would keep freed heap pages resident)
        n = max(1, int(random.uniform(0.25, 1.0) * churn_mib * 256)) * 4096
        if spare is not None:
            spare.close()
        spare = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        for i in range(0, n, 4096):
            spare[i] = 1
        time.sleep(0.02)
    else:
        time.sleep(0.1)
stop.set()
"""

PARENT = r"""
import os, subprocess, sys, threading, time
child, sizes, threads, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
churn, thp, pmib = sys.argv[5], sys.argv[6], int(sys.argv[7])
me, ppid = os.getpid(), os.getppid()
buf = bytearray(pmib * 2**20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
stop = threading.Event()
ts = [threading.Thread(target=stop.wait, daemon=True) for _ in range(7)]
for t in ts:
    t.start()
kids = [
    subprocess.Popen(
        [sys.executable, "-c", child, s, str(threads), str(lifetime), str(me), churn, thp],
        stdout=subprocess.PIPE,
        text=True,
    )
    for s in sizes.split(",")
]
ok = all(k.stdout.readline().strip() == "ready" for k in kids)
print("ready " + " ".join(str(k.pid) for k in kids) if ok else "failed", flush=True)
deadline = time.monotonic() + lifetime
while ok and time.monotonic() < deadline and os.getppid() == ppid:
    time.sleep(0.2)
for k in kids:
    k.kill()
    k.wait()
"""

MARGIN_MIB = 3072


def mem_available_mib() -> int:
    """``MemAvailable`` of this machine in MiB (0 when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


class NotEnoughMemory(RuntimeError):
    """The tree would not fit beside what already runs on this machine."""


@dataclass
class SyntheticEngine:
    children: int = 8
    threads: int = 48
    mib: int | tuple[int, int] = 256
    lifetime: float = 600.0
    own_parent: bool = False
    churn_mib: float = 2.0
    thp: bool = False
    parent_mib: int = 64
    procs: list[subprocess.Popen] = field(default_factory=list)
    child_pids: list[int] = field(default_factory=list)
    churning: bool = False

    def sizes(self) -> list[int]:
        """MiB touched by each child."""
        if isinstance(self.mib, tuple):
            lo, hi = self.mib
            n = max(1, self.children - 1)
            return [round(lo + (hi - lo) * i / n) for i in range(self.children)]
        return [self.mib] * self.children

    @property
    def total_mib(self) -> int:
        return sum(self.sizes()) + (self.parent_mib if self.own_parent else 0)

    @property
    def root(self) -> int:
        """The tree's root: the PID a reader attaches to."""
        return self.procs[0].pid if self.own_parent else os.getpid()

    @property
    def pids(self) -> list[int]:
        return [self.root, *self.child_pids]

    def __enter__(self) -> SyntheticEngine:
        need = self.total_mib + MARGIN_MIB
        have = mem_available_mib()
        if have and need > have:
            raise NotEnoughMemory(f"the tree needs {need} MiB with margin, MemAvailable is {have} MiB")
        args = [str(self.threads), str(self.lifetime)]
        flags = [str(self.churn_mib), "1" if self.thp else "0"]
        try:
            if self.own_parent:
                sizes = ",".join(str(s) for s in self.sizes())
                p = subprocess.Popen(
                    [sys.executable, "-c", PARENT, CHILD, sizes, *args, *flags, str(self.parent_mib)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self.procs.append(p)
                assert p.stdout is not None
                line = p.stdout.readline().split()
                if not line or line[0] != "ready":
                    raise RuntimeError("synthetic engine failed to start")
                self.child_pids = [int(x) for x in line[1:]]
            else:
                for s in self.sizes():
                    p = subprocess.Popen(
                        [sys.executable, "-c", CHILD, str(s), *args, str(os.getpid()), *flags],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    self.procs.append(p)
                for p in self.procs:
                    assert p.stdout is not None
                    if p.stdout.readline().strip() != "ready":
                        raise RuntimeError("synthetic child failed to start")
                self.child_pids = [p.pid for p in self.procs]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def churn(self, on: bool) -> None:
        """Start (or stop) every child replacing a buffer of up to ``churn_mib`` MiB continuously."""
        if on == self.churning:
            return
        self.churning = on
        for pid in self.child_pids:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def __exit__(self, *exc: object) -> None:
        # our own processes only, by PID: children of our parent first, then what we started
        if self.own_parent:
            for pid in self.child_pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.own_parent:
            deadline = time.time() + 5
            while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in self.child_pids):
                time.sleep(0.05)
        self.procs.clear()
        self.child_pids = []
