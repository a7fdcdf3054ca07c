"""The kernel's OOM-kill reports, from ``/dev/kmsg`` (or ``dmesg`` text), parsed into records.

A worker whose memory is strictly bound to one node dies with SIGKILL and the engine only says
"worker died with -9". The kernel said more: the constraint (memory policy, cgroup, or global),
the nodemask, the cgroup, the victim's RSS. This module reads that, best effort: reading the
kernel log needs privileges (``kernel.dmesg_restrict``), so a failure is a degraded reason.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from numatop_llm.probes.cpulist import parse_cpulist


class OomKill(BaseModel):
    """One OOM kill as the kernel reported it."""

    model_config = ConfigDict(frozen=True)

    pid: int
    task: str
    #: CONSTRAINT_MEMORY_POLICY, CONSTRAINT_MEMCG, CONSTRAINT_CPUSET or CONSTRAINT_NONE
    constraint: str = "CONSTRAINT_NONE"
    nodemask: tuple[int, ...] = ()
    cpuset: str | None = None
    mems_allowed: tuple[int, ...] = ()
    oom_memcg: str | None = None
    task_memcg: str | None = None
    uid: int | None = None
    anon_rss_bytes: int | None = None
    file_rss_bytes: int | None = None
    shmem_rss_bytes: int | None = None
    total_vm_bytes: int | None = None
    #: seconds since boot (kernel timestamp), when known
    uptime_seconds: float | None = None
    #: the task that triggered the OOM killer and its allocation order
    invoker: str | None = None

    @property
    def kind(self) -> str:
        return {
            "CONSTRAINT_MEMORY_POLICY": "memory policy (strict membind)",
            "CONSTRAINT_MEMCG": "cgroup memory limit",
            "CONSTRAINT_CPUSET": "cpuset mems",
        }.get(self.constraint, "whole machine out of memory")

    @property
    def rss_bytes(self) -> int:
        return (self.anon_rss_bytes or 0) + (self.file_rss_bytes or 0) + (self.shmem_rss_bytes or 0)


_KMSG = re.compile(r"^\d+,\d+,(\d+),[^;]*;(.*)$")
_DMESG_TS = re.compile(r"^\[\s*(\d+\.\d+)\]\s?(.*)$")
_OOM_KILL = re.compile(r"oom-kill:(\S+)")
_KILLED = re.compile(
    r"Killed process (\d+) \(([^)]*)\)(?:,? total-vm:(\d+)kB)?(?:,? anon-rss:(\d+)kB)?"
    r"(?:,? file-rss:(\d+)kB)?(?:,? shmem-rss:(\d+)kB)?"
)
_INVOKED = re.compile(r"^(\S.*?) invoked oom-killer:")


def _lines(text: str) -> list[tuple[float | None, str]]:
    out: list[tuple[float | None, str]] = []
    for raw in text.splitlines():
        m = _KMSG.match(raw)
        if m:
            out.append((int(m.group(1)) / 1e6, m.group(2)))
            continue
        m = _DMESG_TS.match(raw)
        if m:
            out.append((float(m.group(1)), m.group(2)))
        elif raw and not raw.startswith(" "):
            out.append((None, raw))
    return out


def _nodes(text: str) -> tuple[int, ...]:
    if not text or text == "(null)":
        return ()
    try:
        return tuple(parse_cpulist(text))
    except ValueError:
        return ()


def parse_oom_reports(text: str) -> list[OomKill]:
    """Every OOM kill in a kernel log (kmsg records or ``dmesg`` lines), oldest first."""
    kills: list[OomKill] = []
    pending: dict[str, str] = {}
    invoker: str | None = None
    for ts, line in _lines(text):
        mi = _INVOKED.match(line)
        if mi:
            invoker = mi.group(1)
            pending = {}
            continue
        mo = _OOM_KILL.search(line)
        if mo:
            pending = {}
            for part in mo.group(1).split(","):
                k, _, v = part.partition("=")
                pending[k] = v
            continue
        mk = _KILLED.search(line)
        if mk:
            kib = [int(x) * 1024 if x else None for x in mk.group(3, 4, 5, 6)]
            pid = int(mk.group(1))
            info = pending if pending.get("pid") in (None, str(pid)) else {}
            uid = info.get("uid")
            kills.append(
                OomKill(
                    pid=pid,
                    task=mk.group(2),
                    constraint=info.get(
                        "constraint", "CONSTRAINT_MEMCG" if "Memory cgroup" in line else "CONSTRAINT_NONE"
                    ),
                    nodemask=_nodes(info.get("nodemask", "")),
                    cpuset=info.get("cpuset"),
                    mems_allowed=_nodes(info.get("mems_allowed", "")),
                    oom_memcg=info.get("oom_memcg"),
                    task_memcg=info.get("task_memcg"),
                    uid=int(uid) if uid and uid.isdigit() else None,
                    total_vm_bytes=kib[0],
                    anon_rss_bytes=kib[1],
                    file_rss_bytes=kib[2],
                    shmem_rss_bytes=kib[3],
                    uptime_seconds=ts,
                    invoker=invoker,
                )
            )
            pending = {}
            invoker = None
    return kills


def read_kernel_log(dev_kmsg: Path = Path("/dev/kmsg")) -> tuple[str, list[str]]:
    """The kernel ring buffer as text: ``/dev/kmsg`` (non-blocking), else ``dmesg``.

    Returns (text, degraded reasons); never raises.
    """
    problems: list[str] = []
    try:
        fd = os.open(dev_kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        problems.append(f"cannot read {dev_kmsg}: {exc.strerror}")
    else:
        chunks: list[str] = []
        try:
            while True:
                try:
                    rec = os.read(fd, 8192)
                except OSError as exc:
                    if exc.errno == errno.EPIPE:  # a record was overwritten while reading: go on
                        continue
                    break
                if not rec:
                    break
                chunks.append(rec.decode("utf-8", "replace").rstrip("\n"))
        finally:
            os.close(fd)
        if chunks:
            return "\n".join(chunks), problems
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        problems.append(f"cannot run dmesg: {exc}")
        return "", problems
    if out.returncode != 0:
        problems.append(f"dmesg: {out.stderr.strip() or 'failed'} (needs root or kernel.dmesg_restrict=0)")
        return "", problems
    return out.stdout, problems


def boot_time(proc: Path = Path("/proc")) -> float | None:
    """Wall-clock time of boot, to turn kernel timestamps into times of day."""
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


_KILLED_LINE = re.compile(r"Killed process \d+")
_REPORT_START = re.compile(r"invoked oom-killer:|oom-kill:")


class KernelOomWatch:
    """New OOM kills in the kernel log since the watch started.

    ``/dev/kmsg`` is kept open and read incrementally (only new records, no rescans); a report
    cut between two polls is carried over. When ``/dev/kmsg`` cannot be read, ``dmesg`` is run at
    most every ``dmesg_every`` seconds and kills already seen at start are not counted.
    """

    def __init__(self, dev_kmsg: Path | None = Path("/dev/kmsg"), dmesg_every: float = 30.0) -> None:
        self.problem: str | None = None
        self.dmesg_every = dmesg_every
        self._fd: int | None = None
        self._carry: list[str] = []
        self._seen: set[tuple] | None = None
        self._dmesg_at = 0.0
        self.mode = "off"
        if dev_kmsg is None:
            self.problem = "kernel log not read (non-live /proc root)"
            return
        self._dev = dev_kmsg
        try:
            fd = os.open(dev_kmsg, os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            text, problems = read_kernel_log(Path("/nonexistent/kmsg"))
            if problems and not text:
                self.problem = f"cannot read {dev_kmsg} ({exc.strerror}) nor dmesg: OOM kills from cgroups only"
                return
            self.mode = "dmesg"
            self.problem = f"cannot read {dev_kmsg} ({exc.strerror}): reading dmesg every {dmesg_every:g} s"
            self._seen = {self._kill_key(k) for k in parse_oom_reports(text)}
            self._dmesg_at = time.monotonic()
            return
        self._fd = fd
        self.mode = "kmsg"

    @staticmethod
    def _kill_key(k: OomKill) -> tuple:
        return (k.pid, k.task, k.uptime_seconds)

    def poll(self) -> list[OomKill]:
        """The kills reported since the previous poll (oldest first)."""
        if self.mode == "kmsg":
            return self._poll_kmsg()
        if self.mode == "dmesg":
            return self._poll_dmesg()
        return []

    def _poll_kmsg(self) -> list[OomKill]:
        assert self._fd is not None
        lines: list[str] = []
        while True:
            try:
                rec = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # records overwritten before we read them: go on
                    continue
                self.problem = f"reading {self._dev} failed: {exc.strerror}"
                break
            if not rec:
                break
            lines.append(rec.decode("utf-8", "replace").rstrip("\n"))
        if not lines:
            return []
        text_lines = self._carry + lines
        kills = parse_oom_reports("\n".join(text_lines))
        last_kill = max((i for i, line in enumerate(text_lines) if _KILLED_LINE.search(line)), default=-1)
        rest = text_lines[last_kill + 1 :]
        start = next((i for i, line in enumerate(rest) if _REPORT_START.search(line)), None)
        self._carry = rest[start:][-5000:] if start is not None else []
        return kills

    def _poll_dmesg(self) -> list[OomKill]:
        now = time.monotonic()
        if now - self._dmesg_at < self.dmesg_every:
            return []
        self._dmesg_at = now
        text, _ = read_kernel_log(Path("/nonexistent/kmsg"))
        seen = self._seen if self._seen is not None else set()
        new = []
        for k in parse_oom_reports(text):
            key = self._kill_key(k)
            if key not in seen:
                seen.add(key)
                new.append(k)
        self._seen = seen
        return new

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
