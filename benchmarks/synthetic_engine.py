"""A synthetic engine-like process tree for benchmarks: a parent and N children, each with many
threads and touched memory, shaped like a vLLM CPU engine (API server → workers).

Bounded in time: every process exits after ``lifetime`` seconds, or when its parent dies.
Usage as a context manager::

    with SyntheticEngine(children=8, threads=48, mib=256) as eng:
        eng.pids  # parent first
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

CHILD = r"""
import os, sys, threading, time
mib, threads, lifetime, ppid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
buf = bytearray(mib * 2**20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
stop = threading.Event()
def spin(n):
    # mostly idle, like gloo/OpenMP helpers between steps
    while not stop.wait(0.5):
        pass
ts = [threading.Thread(target=spin, args=(i,), daemon=True) for i in range(threads - 1)]
for t in ts:
    t.start()
print("ready", flush=True)
deadline = time.time() + lifetime
while time.time() < deadline and os.getppid() == ppid:
    time.sleep(0.2)
stop.set()
"""


@dataclass
class SyntheticEngine:
    children: int = 8
    threads: int = 48
    mib: int = 256
    lifetime: float = 600.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [os.getpid()] + [p.pid for p in self.procs]

    def __enter__(self) -> SyntheticEngine:
        for _ in range(self.children):
            p = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.mib), str(self.threads), str(self.lifetime), str(os.getpid())],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(p)
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                self.__exit__(None, None, None)
                raise RuntimeError("synthetic child failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
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
        self.procs.clear()
