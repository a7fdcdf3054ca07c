"""Helpers shared by the benchmarks: the machine they ran on, CPU accounting, tables, a tmux pane."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def meminfo_gib(key: str) -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return 0.0


def machine() -> str:
    """One line naming the machine: CPUs (nproc), CPU model, kernel, memory, load, Python."""
    nodes = (
        len([n for n in os.listdir("/sys/devices/system/node") if n.startswith("node")])
        if os.path.isdir("/sys/devices/system/node")
        else 1
    )
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        thp = "?"
    load = os.getloadavg()[0]
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))} · {cpu_model()} · Linux {platform.release()} · "
        f"{nodes} NUMA node{'s' if nodes != 1 else ''} · RAM {meminfo_gib('MemTotal'):.1f} GiB "
        f"(available {meminfo_gib('MemAvailable'):.1f}) · THP {thp} · load {load:.1f} · "
        f"Python {platform.python_version()}"
    )


def children_cpu() -> float:
    """CPU seconds of waited-for children so far (user + system)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cpu(cmd: list[str], rounds: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per run of ``cmd``, its output discarded."""
    c0, w0 = children_cpu(), time.perf_counter()
    for _ in range(rounds):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (children_cpu() - c0) / rounds, (time.perf_counter() - w0) / rounds


class Table:
    """A fixed-width text table; numbers are formatted by the caller."""

    def __init__(self, *columns: tuple[str, int]) -> None:
        self.columns = columns
        self.rows: list[tuple[str, ...]] = []

    def header(self) -> str:
        name, width = self.columns[0]
        return f"{name:<{width}}" + "".join(f" {n:>{w}}" for n, w in self.columns[1:])

    def line(self, *cells: object) -> str:
        text = [str(c) if c is not None else "-" for c in cells]
        text += ["-"] * (len(self.columns) - len(text))
        width = self.columns[0][1]
        return f"{text[0]:<{width}}" + "".join(
            f" {c:>{w}}" for c, (_, w) in zip(text[1:], self.columns[1:], strict=False)
        )

    def print_header(self) -> None:
        print(self.header())
        print("-" * len(self.header()))

    def row(self, *cells: object) -> None:
        self.rows.append(tuple(str(c) for c in cells))
        print(self.line(*cells), flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def ratio(ours: float | None, base: float | None) -> str:
    return "-" if not ours or not base else f"{ours / base:.2f}×"


class Tmux:
    """One detached tmux session on a private server socket, killed on exit (ours only)."""

    def __init__(self, command: str, width: int = 100, height: int = 30, env: dict[str, str] | None = None) -> None:
        if not shutil.which("tmux"):
            raise RuntimeError("tmux is not installed (apt-get install tmux)")
        self.socket = f"numatop-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.command = command
        self.size = (width, height)
        self.env = env or {}
        self.spawned_at = 0.0
        self.pid = 0

    def _tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False)

    def __enter__(self) -> Tmux:
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        inner = f"cd {REPO} && exec env {env} {self.command}"
        self.spawned_at = time.monotonic()
        r = self._tmux("new-session", "-d", "-x", str(self.size[0]), "-y", str(self.size[1]), inner)
        if r.returncode != 0:
            raise RuntimeError(f"tmux failed: {r.stderr.strip()}")
        self.pid = int(self._tmux("display", "-p", "#{pane_pid}").stdout.strip() or 0)
        return self

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p").stdout

    def wait_for(self, predicate, timeout: float, poll: float = 0.01) -> float | None:
        """Seconds from spawn until ``predicate(screen)`` holds, or None after ``timeout``."""
        end = self.spawned_at + timeout
        while time.monotonic() < end:
            if predicate(self.screen()):
                return time.monotonic() - self.spawned_at
            time.sleep(poll)
        return None

    def __exit__(self, *exc: object) -> None:
        self._tmux("kill-server")
        # the app got SIGHUP with its pane; make sure our own process is gone
        deadline = time.monotonic() + 5
        while self.pid and _running(self.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.pid and _running(self.pid):
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


def _running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits for init to reap it: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
