"""Everything the relaunch does to the machine, behind one small interface.

:class:`LiveSystem` is the real thing: ``/proc``, signals (through pidfds, so a reused PID is
never signalled), sockets, ``/dev/shm``, HTTP to the engine, the kernel log. The state machine in
:mod:`numatop_llm.launcher.relaunch` only talks to a :class:`System`, so its tests drive it with a fake
one and a fake clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from numatop_llm.launcher.spec import LaunchSpec, cgroup_procs_files
from numatop_llm.probes.roots import SysRoots

SHM = Path("/dev/shm")
DIST_PREFIX = "vllm_dist_"
#: seconds after the last worker started within which its FileStore rendezvous writes the file
DIST_WINDOW = 60.0


@dataclass(frozen=True, order=True)
class ProcRef:
    """A process that cannot be confused with a later one reusing its PID."""

    pid: int
    starttime: int
    label: str = field(default="", compare=False)


class Spawned(Protocol):
    pid: int

    def poll(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal), else None."""


@dataclass(frozen=True)
class HttpResult:
    status: int  # 0 when the connection failed
    body: str
    error: str = ""


class System(Protocol):
    """What :class:`~numatop_llm.launcher.relaunch.Relaunch` needs from the machine."""

    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def proc_ref(self, pid: int) -> ProcRef | None: ...
    def alive(self, ref: ProcRef) -> bool: ...
    def tree(self, pid: int) -> list[ProcRef]: ...
    def kill(self, ref: ProcRef, sig: int) -> bool: ...
    def port_free(self, host: str | None, port: int) -> bool: ...
    def port_owner(self, port: int) -> int | None: ...
    def leftovers(self, tree: list[ProcRef], tmpdir: str | None = None) -> list[str]: ...
    def remove_leftovers(self, paths: list[str]) -> tuple[list[str], list[str]]: ...
    def spawn(self, spec: LaunchSpec, log_path: Path) -> Spawned: ...
    def http(self, method: str, url: str, body: dict | None = None, *, headers: dict | None = None,
             timeout: float = 5.0) -> HttpResult: ...  # fmt: skip
    def log_tail(self, path: Path, lines: int = 30) -> str: ...
    def oom_kills(self, pids: Iterable[int]) -> list[str]: ...


# -- /proc helpers -----------------------------------------------------------------------------
def _stat_fields(proc: Path, pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, ppid, pgrp, session, starttime) or None when gone."""
    try:
        raw = (proc / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _label(proc: Path, pid: int) -> str:
    try:
        data = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    first = data.split(b"\0", 1)[0].decode("utf-8", "replace")
    if first.startswith("VLLM::"):
        return first.removeprefix("VLLM::")
    words = data.replace(b"\0", b" ").decode("utf-8", "replace").split()
    if "serve" in words:
        return "api_server"
    if any("resource_tracker" in w for w in words):
        return "resource_tracker"
    return Path(first).name if first else ""


def _held_paths(proc: Path, pid: int) -> list[str]:
    """Paths a process maps (``maps``) or has open (``fd``)."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in (proc / str(pid) / "maps").read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                out.append(parts[5])
    with contextlib.suppress(OSError):
        for fd in os.scandir(proc / str(pid) / "fd"):
            with contextlib.suppress(OSError):
                out.append(os.readlink(fd.path))
    return out


class LiveSystem:
    """The real machine."""

    def __init__(self, roots: SysRoots = SysRoots(), shm: Path = SHM, tmp: Path | None = None) -> None:  # noqa: B008
        self.roots = roots
        self.proc = roots.proc
        self.shm = shm
        self.tmp = Path(tmp or tempfile.gettempdir())
        self._children: dict[int, subprocess.Popen] = {}

    # clock
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # processes
    def proc_ref(self, pid: int) -> ProcRef | None:
        st = _stat_fields(self.proc, pid)
        if st is None or st[0] in ("Z", "X"):
            return None
        return ProcRef(pid, st[4], _label(self.proc, pid))

    def alive(self, ref: ProcRef) -> bool:
        self._reap(ref.pid)
        st = _stat_fields(self.proc, ref.pid)
        return st is not None and st[4] == ref.starttime and st[0] not in ("Z", "X")

    def _reap(self, pid: int) -> None:
        """Collect engines we spawned once they exit, so they do not linger as zombies. Other
        processes' children are left to their parents (a zombie counts as gone anyway)."""
        child = self._children.get(pid)
        if child is not None:
            child.poll()

    def tree(self, pid: int) -> list[ProcRef]:
        """The live process ``pid`` and its descendants, plus strays left in its process group."""
        stats: dict[int, tuple[str, int, int, int, int]] = {}
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.proc):
                if entry.name.isdigit():
                    st = _stat_fields(self.proc, int(entry.name))
                    if st is not None:
                        stats[int(entry.name)] = st
        if pid not in stats:
            return []
        kids: dict[int, list[int]] = {}
        for p, st in stats.items():
            kids.setdefault(st[1], []).append(p)
        seen: list[int] = []
        stack = [pid]
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.append(p)
            stack.extend(sorted(kids.get(p, []), reverse=True))
        root = stats[pid]
        if root[2] == pid:  # the root leads its process group: orphans of the group belong to it
            seen += [p for p, st in stats.items() if st[2] == pid and st[3] == root[3] and p not in seen]
        return [ProcRef(p, stats[p][4], _label(self.proc, p)) for p in seen if stats[p][0] not in ("Z", "X")]

    def kill(self, ref: ProcRef, sig: int) -> bool:
        """Signal ``ref`` if it is still that process (pidfd: no PID-reuse race). True when sent."""
        try:
            fd = os.pidfd_open(ref.pid)
        except (OSError, AttributeError):
            fd = None
        try:
            if not self.alive(ref):
                return False
            if fd is not None:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(ref.pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False
        finally:
            if fd is not None:
                os.close(fd)

    # network
    def port_free(self, host: str | None, port: int) -> bool:
        bind_host = host if host and host not in ("localhost",) else ""
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((bind_host.strip("[]"), port))
            except OSError:
                return False
        return True

    def port_owner(self, port: int) -> int | None:
        """The PID listening on TCP ``port`` (from /proc/net/tcp{,6} and the processes' fds)."""
        inodes: set[str] = set()
        for name in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in (self.proc / "net" / name).read_text().splitlines()[1:]:
                    parts = line.split()
                    if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        if not inodes:
            return None
        wanted = {f"socket:[{i}]" for i in inodes}
        for entry in os.scandir(self.proc):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in os.scandir(Path(entry.path) / "fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(fd.path) in wanted:
                            return int(entry.name)
        return None

    # leftovers
    def leftovers(self, tree: list[ProcRef], tmpdir: str | None = None) -> list[str]:
        """What the tree would leave behind: ``/dev/shm`` entries it maps or holds open; the unix
        socket files it bound (vLLM's ZMQ ``ipc://`` paths in its temp dir); its gloo FileStore
        ``vllm_dist_<uuid>`` in the engine's temp dir (``tmpdir``, else ours), created by the engine
        core just before it starts the workers; and ``/dev/shm`` entries named after that FileStore
        (the TP>1 ``…-cpushm`` segments, which vLLM leaves behind)."""
        prefix = str(self.shm) + "/"
        out: set[str] = set()
        sockets = _unix_socket_paths(self.proc)
        for ref in tree:
            for path in _held_paths(self.proc, ref.pid):
                if path.startswith(prefix) and not path.endswith(" (deleted)"):
                    out.add(prefix + path[len(prefix) :].split("/")[0])
                elif Path(path).name.startswith(DIST_PREFIX):
                    out.add(path.removesuffix(" (deleted)"))
                elif path.startswith("socket:[") and sockets.get(path[8:-1], "").startswith("/"):
                    out.add(sockets[path[8:-1]])  # a ZMQ ipc:// socket file it bound
        dist = self._dist_files(tree, Path(tmpdir) if tmpdir else self.tmp)
        out.update(dist)
        idents = tuple(Path(d).name for d in dist)
        if idents:
            with contextlib.suppress(OSError):
                out.update(e.path for e in os.scandir(self.shm) if e.name.startswith(idents))
        return sorted(p for p in out if os.path.lexists(p))

    def _dist_files(self, tree: list[ProcRef], tmp: Path) -> list[str]:
        """``/tmp/vllm_dist_*`` files written between the engine core's start and its workers' rendezvous.

        Nothing holds the file open after the rendezvous, so it is attributed by time: written after
        the tree's engine core started and within a minute of its last worker starting, by the same
        user. When another engine's core started inside that window the files are ambiguous: kept.
        """
        core = [r for r in tree if r.label.startswith("EngineCore")]
        workers = [r for r in tree if r.label.startswith("Worker")]
        btime = _boot_time(self.proc)
        if not core or not workers or btime is None:
            return []
        hz = os.sysconf("SC_CLK_TCK")
        lo = btime + min(r.starttime for r in core) / hz - 1
        hi = btime + max(r.starttime for r in workers) / hz + DIST_WINDOW
        ours = {r.pid for r in tree}
        for entry in os.scandir(self.proc):
            if (
                entry.name.isdigit()
                and int(entry.name) not in ours
                and _label(self.proc, int(entry.name)).startswith("EngineCore")
            ):
                st = _stat_fields(self.proc, int(entry.name))
                if st is not None and lo <= btime + st[4] / hz <= hi:
                    return []
        uids = {self._uid(r.pid) for r in core}
        out = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(tmp):
                if not entry.name.startswith(DIST_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if lo <= st.st_mtime <= hi and st.st_uid in uids:
                        out.append(entry.path)
        return out

    def _uid(self, pid: int) -> int | None:
        with contextlib.suppress(OSError):
            return (self.proc / str(pid)).stat().st_uid
        return None

    def remove_leftovers(self, paths: list[str]) -> tuple[list[str], list[str]]:
        """Remove the given leftovers that no live process holds. Returns (removed, kept-because-held)."""
        if not paths:
            return [], []
        wanted = set(paths)
        held: set[str] = set(_unix_socket_paths(self.proc).values()) & wanted  # still bound by someone
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                for p in _held_paths(self.proc, int(entry.name)):
                    p = p.removesuffix(" (deleted)")
                    if p in wanted:
                        held.add(p)
        removed, kept = [], []
        for p in sorted(wanted):
            if p in held:
                kept.append(p)
                continue
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
                removed.append(p)
            except FileNotFoundError:
                continue
            except OSError:
                kept.append(p)
        return removed, kept

    # start
    def spawn(self, spec: LaunchSpec, log_path: Path) -> Spawned:
        """Start ``spec``: no shell, argv list, new session, its cwd, its user (when we are root), its
        cgroups and CPU affinity; stdout and stderr to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        cg_files = [str(p) for p in cgroup_procs_files(spec, self.roots.sys)]
        affinity = set(spec.cpus_allowed)
        drop = os.geteuid() == 0 and (spec.uid != 0 or spec.gid != 0)
        uid, gid, groups = spec.uid, spec.gid, list(spec.groups)

        def child_setup() -> None:  # runs in the child between fork and exec
            for f in cg_files:
                try:
                    with open(f, "w") as fh:
                        fh.write("0")
                except OSError:
                    pass
            if affinity:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, affinity)
            if drop:
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)

        try:
            with os.fdopen(fd, "ab") as log:
                child = subprocess.Popen(
                    spec.command(),
                    executable=spec.executable(),
                    cwd=spec.cwd,
                    env=spec.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=child_setup,
                )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpawnError(f"cannot start {spec.executable()}: {exc}") from None
        self._children[child.pid] = child
        return child

    # http
    def http(
        self, method: str, url: str, body: dict | None = None, *, headers: dict | None = None, timeout: float = 5.0
    ) -> HttpResult:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return HttpResult(resp.status, resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            return HttpResult(exc.code, exc.read().decode("utf-8", "replace"), f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return HttpResult(0, "", str(reason))

    # reports
    def log_tail(self, path: Path, lines: int = 30) -> str:
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def oom_kills(self, pids: Iterable[int]) -> list[str]:
        """Explanations of kernel OOM kills of these PIDs (empty when none or the log is unreadable)."""
        from numatop_llm.postmortem import explain_kill, relevant_kills
        from numatop_llm.probes.kernel_log import boot_time, parse_oom_reports, read_kernel_log

        text, _ = read_kernel_log()
        kills = relevant_kills(parse_oom_reports(text), set(pids))
        btime = boot_time(self.proc)
        return [explain_kill(k, None, btime).text for k in kills]


class SpawnError(RuntimeError):
    """The new engine could not even be started (exec failed). One line."""


def _unix_socket_paths(proc: Path) -> dict[str, str]:
    """inode → path of every bound unix socket (``/proc/net/unix``; abstract ones start with ``@``)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (proc / "net" / "unix").read_text(errors="replace").splitlines()[1:]:
            parts = line.split(None, 7)
            if len(parts) == 8:
                out[parts[6]] = parts[7]
    return out


def _boot_time(proc: Path) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
