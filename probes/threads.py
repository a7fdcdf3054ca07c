"""Per-thread placement: last CPU, allowed CPUs, CPU time, with CPU% as a delta between samples.

``ThreadReader`` keeps each thread's ``stat`` descriptor open between samples and re-reads it with
``os.pread`` (about 4× cheaper than open/read/close), reopening when a thread appears or a read
fails. CPU% is keyed by (tid, starttime), so a reused TID never inherits another thread's ticks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from probes.cpulist import parse_cpulist
from probes.models import Thread
from probes.textio import Problems, read_text

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class StatFields:
    comm: str
    state: str
    utime: int
    stime: int
    starttime: int
    processor: int | None
    ppid: int | None


def parse_stat(text: str) -> StatFields | None:
    """Parse ``/proc/PID[/task/TID]/stat``; None when truncated or garbled.

    The comm field is in parentheses and may itself contain spaces and parentheses, so the
    fields are split after the last ``)``.
    """
    lp, rp = text.find("("), text.rfind(")")
    if lp < 0 or rp < lp:
        return None
    rest = text[rp + 1 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3]
    if len(rest) < 20:
        return None
    try:
        proc = int(rest[36]) if len(rest) > 36 else None
        return StatFields(
            comm=text[lp + 1 : rp],
            state=rest[0],
            ppid=int(rest[1]),
            utime=int(rest[11]),
            stime=int(rest[12]),
            starttime=int(rest[19]),
            processor=proc,
        )
    except (ValueError, IndexError):
        return None


class ThreadReader:
    """Reads every thread of a set of processes; keeps descriptors and previous ticks between calls."""

    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self._proc_s = str(proc)
        self._live = proc == Path("/proc")
        self._fds: dict[int, int] = {}
        self._prev: dict[tuple[int, int], tuple[int, float]] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()

    def _read_stat(self, pid: int, tid: int) -> str | None:
        fd = self._fds.get(tid)
        for attempt in range(2):
            if fd is None:
                try:
                    fd = os.open(f"{self._proc_s}/{pid}/task/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                self._fds[tid] = fd
            try:
                data = os.pread(fd, 4096, 0)
                if data:
                    return data.decode("utf-8", "replace")
            except OSError:
                pass
            # thread gone or descriptor stale: reopen once
            try:
                os.close(fd)
            except OSError:
                pass
            self._fds.pop(tid, None)
            fd = None
            if attempt:
                return None
        return None

    def _allowed(self, pid: int, tid: int) -> tuple[int, ...]:
        if self._live:
            try:
                return tuple(sorted(os.sched_getaffinity(tid)))
            except OSError:
                return ()
        text = read_text(self.proc / str(pid) / "task" / str(tid) / "status", quiet_missing=True)
        for line in (text or "").splitlines():
            if line.startswith("Cpus_allowed_list:"):
                try:
                    return tuple(parse_cpulist(line.split(":", 1)[1]))
                except ValueError:
                    return ()
        return ()

    def read(self, pid: int, cpu_node: dict[int, int], problems: Problems) -> list[Thread]:
        """Threads of one process. Threads that vanish mid-read are silently dropped."""
        tdir = f"{self._proc_s}/{pid}/task"
        try:
            tids = sorted(int(t) for t in os.listdir(tdir) if t.isdigit())
        except PermissionError:
            problems.add(f"permission denied: {tdir}")
            return []
        except OSError:
            return []
        now = time.monotonic()
        out: list[Thread] = []
        for tid in tids:
            text = self._read_stat(pid, tid)
            if text is None:
                continue
            st = parse_stat(text)
            if st is None:
                problems.add(f"garbled: {tdir}/{tid}/stat")
                continue
            ticks = st.utime + st.stime
            key = (tid, st.starttime)
            pct = None
            prev = self._prev.get(key)
            if prev is not None and now > prev[1]:
                pct = max(0.0, (ticks - prev[0]) / CLK_TCK / (now - prev[1]) * 100.0)
            self._prev[key] = (ticks, now)
            out.append(
                Thread(
                    tid=tid,
                    comm=st.comm,
                    state=st.state,
                    cpu=st.processor,
                    node=cpu_node.get(st.processor) if st.processor is not None else None,
                    allowed_cpus=self._allowed(pid, tid),
                    utime_ticks=st.utime,
                    stime_ticks=st.stime,
                    starttime=st.starttime,
                    cpu_percent=round(pct, 1) if pct is not None else None,
                )
            )
        return out

    def forget_missing(self, alive_tids: set[int]) -> None:
        """Drop descriptors and history of threads that no longer exist."""
        for tid in [t for t in self._fds if t not in alive_tids]:
            try:
                os.close(self._fds.pop(tid))
            except OSError:
                pass
        self._prev = {k: v for k, v in self._prev.items() if k[0] in alive_tids}
