"""Per-thread placement: last CPU, allowed CPUs, CPU time, with CPU% as a delta between samples.

``ThreadReader`` keeps each thread's ``stat`` descriptor open between samples and re-reads it with
``os.pread`` (about 4× cheaper than open/read/close), reopening when a thread appears or a read
fails. Kept descriptors stay under the soft ``RLIMIT_NOFILE`` (raised toward the hard limit when a
tree has more threads than it allows); beyond it a thread is read with open/read/close, so no
thread is ever left out. CPU% is keyed by (tid, starttime), so a reused TID never inherits another thread's ticks.
A thread that did not run since the previous sample (same ticks, CPU, state, name and affinity)
gets the previous ``Thread`` object back instead of a new one: most threads of an engine wait
(gloo, OpenMP helpers), and building a validated model is a third of a thread's cost.
"""

from __future__ import annotations

import errno
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from numatop_llm.probes.cpulist import parse_cpulist
from numatop_llm.probes.models import Thread
from numatop_llm.probes.textio import DENIED, Problems, read_text

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


#: an idle thread's stat is re-read at least this often (seconds) even when schedstat says it did not run
STAT_MAX_AGE = 10.0
#: descriptors left for everything else in the process (sockets, files, the terminal)
RESERVED_FDS = 256


def _fd_budget() -> int:
    """How many thread descriptors may be kept open under the current soft ``RLIMIT_NOFILE``."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 512
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(0, soft - RESERVED_FDS)


def _read_once(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 4096) or None
    except OSError:
        return None
    finally:
        os.close(fd)


class ThreadReader:
    """Reads every thread of a set of processes; keeps descriptors and previous ticks between calls."""

    def __init__(self, proc: Path) -> None:
        self.proc = proc
        self._proc_s = str(proc)
        self._live = proc == Path("/proc")
        self._fds: dict[int, int] = {}
        #: descriptors of ``schedstat``: run time and switch count, 3× cheaper to read than ``stat``
        self._sched_fds: dict[int, int] = {}
        self._fd_budget = _fd_budget()
        self._mask_set: set[int] = set()
        self._mask: tuple[int, ...] = ()
        self._prev: dict[tuple[int, int], tuple[int, float]] = {}
        #: tid → (the stat fields a Thread is made of, as read; that Thread; its schedstat then; read at)
        self._last: dict[int, tuple[tuple[bytes, ...], Thread, bytes | None, float]] = {}

    def close(self) -> None:
        for fd in (*self._fds.values(), *self._sched_fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._sched_fds.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()

    def _room_for_descriptor(self) -> bool:
        """Whether one more descriptor may be kept open. Kept descriptors stay ``RESERVED_FDS`` below
        the soft ``RLIMIT_NOFILE``; when they reach it the soft limit is raised toward the hard one
        (the common soft default, 1024, is smaller than a large engine's thread count)."""
        if len(self._fds) + len(self._sched_fds) < self._fd_budget:
            return True
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if hard == resource.RLIM_INFINITY or hard > soft:
                want = soft + 4096 if hard == resource.RLIM_INFINITY else min(hard, soft + 4096)
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            pass
        self._fd_budget = _fd_budget()
        return len(self._fds) + len(self._sched_fds) < self._fd_budget

    def _read_stat(self, pid: int, tid: int) -> bytes | None:
        return self._pread(self._fds, pid, tid, "stat")

    def _pread(self, fds: dict[int, int], pid: int, tid: int, name: str) -> bytes | None:
        """Read the thread's file ``name`` through a descriptor kept in ``fds`` (opened on first use)."""
        fd = fds.get(tid)
        for attempt in range(2):
            if fd is None:
                path = f"{self._proc_s}/{pid}/task/{tid}/{name}"
                if not self._room_for_descriptor():
                    return _read_once(path)  # no descriptor to spare: open, read, close
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self._fd_budget = len(self._fds) + len(self._sched_fds)
                        return _read_once(path)
                    return None
                fds[tid] = fd
            try:
                data = os.pread(fd, 4096, 0)
                if data:
                    return data
            except OSError:
                pass
            # thread gone or descriptor stale: reopen once
            try:
                os.close(fd)
            except OSError:
                pass
            fds.pop(tid, None)
            fd = None
            if attempt:
                return None
        return None

    def _allowed(self, pid: int, tid: int) -> tuple[int, ...]:
        if self._live:
            try:
                cpus = os.sched_getaffinity(tid)
            except OSError:
                return ()
            # most threads of a tree share one mask: reuse its sorted tuple
            if cpus != self._mask_set:
                self._mask_set, self._mask = cpus, tuple(sorted(cpus))
            return self._mask
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
            problems.add(f"{DENIED}: {tdir}")
            return []
        except OSError:
            return []
        now = time.monotonic()
        out: list[Thread] = []
        for tid in tids:
            last = self._last.get(tid)
            sched = None
            if self._live:
                sched = self._pread(self._sched_fds, pid, tid, "schedstat")
                if sched == b"0 0 0\n":
                    sched = None  # scheduler statistics are off in this kernel
            allowed = self._allowed(pid, tid)
            if last is not None:
                prev_thread = last[1]
                idle = (
                    prev_thread.cpu_percent == 0.0
                    and prev_thread.allowed_cpus == allowed
                    and prev_thread.node == cpu_node.get(prev_thread.cpu)  # type: ignore[arg-type]
                )
                # not scheduled in since the last stat read (same run time and switch count): its
                # stat is unchanged; stat is still re-read every STAT_MAX_AGE s (a name written
                # from another thread changes without the thread running)
                if idle and sched is not None and sched == last[2] and now - last[3] < STAT_MAX_AGE:
                    self._prev[(tid, prev_thread.starttime)] = (prev_thread.utime_ticks + prev_thread.stime_ticks, now)
                    out.append(prev_thread)
                    continue
            else:
                idle = False
            data = self._read_stat(pid, tid)
            if data is None:
                continue
            rp = data.rfind(b")")
            fields = data[rp + 1 :].split(None, 37) if rp > 0 else []
            if len(fields) >= 38:
                # (name, state, utime, stime, starttime, processor): what a waiting thread keeps
                sig = (data[: rp + 1], fields[0], fields[11], fields[12], fields[19], fields[36])
                if idle and last is not None and last[0] == sig:
                    prev_thread = last[1]
                    self._prev[(tid, prev_thread.starttime)] = (prev_thread.utime_ticks + prev_thread.stime_ticks, now)
                    self._last[tid] = (sig, prev_thread, sched, now)
                    out.append(prev_thread)
                    continue
            else:
                sig = None
            st = parse_stat(data.decode("utf-8", "replace"))
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
            thread = Thread(
                tid=tid,
                comm=st.comm,
                state=st.state,
                cpu=st.processor,
                node=cpu_node.get(st.processor) if st.processor is not None else None,
                allowed_cpus=allowed,
                utime_ticks=st.utime,
                stime_ticks=st.stime,
                starttime=st.starttime,
                cpu_percent=round(pct, 1) if pct is not None else None,
            )
            if sig is not None:
                self._last[tid] = (sig, thread, sched, now)
            out.append(thread)
        return out

    def forget_missing(self, alive_tids: set[int]) -> None:
        """Drop descriptors and history of threads that no longer exist."""
        for fds in (self._fds, self._sched_fds):
            for tid in [t for t in fds if t not in alive_tids]:
                try:
                    os.close(fds.pop(tid))
                except OSError:
                    pass
        self._prev = {k: v for k, v in self._prev.items() if k[0] in alive_tids}
        self._last = {k: v for k, v in self._last.items() if k in alive_tids}
