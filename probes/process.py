"""Read one process: status, cmdline, environ, exe, cwd, owner — never raising."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from numatop_llm.probes.cpulist import parse_cpulist
from numatop_llm.probes.secrets import mask_env
from numatop_llm.probes.textio import KeptFiles, Problems, describe_oserror, read_text
from numatop_llm.probes.threads import parse_stat

#: environment names kept in snapshots (values of secrets are masked anyway)
ENV_PREFIXES = ("VLLM_", "OMP_", "GOMP_", "KMP_", "MKL_", "LD_PRELOAD", "HF_", "TORCH", "PYTORCH_", "CUDA_VISIBLE")


@dataclass
class ProcBasics:
    pid: int
    ppid: int | None = None
    comm: str = ""
    cmdline: tuple[str, ...] = ()
    uid: int | None = None
    rss_bytes: int = 0
    starttime: int = 0
    cpus_allowed: tuple[int, ...] = ()
    mems_allowed: tuple[int, ...] = ()
    alive: bool = True
    problems: list[str] = field(default_factory=list)


def pid_exists(proc: Path, pid: int) -> bool:
    return (proc / str(pid)).is_dir()


def list_pids(proc: Path) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def read_cmdline(proc: Path, pid: int, files: KeptFiles | None = None) -> tuple[str, ...] | None:
    """argv of a process (None when gone). A process that rewrote its title (``VLLM::Worker``)
    may leave one space-separated string instead of NUL-separated args: split it."""
    path = proc / str(pid) / "cmdline"
    try:
        data = path.read_bytes() if files is None else files.read(path)
    except OSError:
        return None
    parts = [p.decode("utf-8", "replace") for p in data.split(b"\x00")]
    while parts and parts[-1] == "":
        parts.pop()
    if len(parts) == 1 and " " in parts[0]:
        parts = parts[0].split()
    return tuple(parts)


def read_basics(proc: Path, pid: int, files: KeptFiles | None = None) -> ProcBasics:
    """status + stat + cmdline for one process; ``alive`` false when it vanished."""
    problems = Problems()
    b = ProcBasics(pid=pid)
    status = read_text(proc / str(pid) / "status", problems, files=files)
    if status is None:
        b.alive = pid_exists(proc, pid)
        if not b.alive:
            problems.items = [f"process {pid} exited"]
        b.problems = problems.items
        return b
    for line in status.splitlines():
        key, _, val = line.partition(":")
        val = val.strip()
        try:
            if key == "Name":
                b.comm = val
            elif key == "PPid":
                b.ppid = int(val)
            elif key == "Uid":
                b.uid = int(val.split()[0])
            elif key == "VmRSS":
                b.rss_bytes = int(val.split()[0]) * 1024
            elif key == "Cpus_allowed_list":
                b.cpus_allowed = tuple(parse_cpulist(val))
            elif key == "Mems_allowed_list":
                b.mems_allowed = tuple(parse_cpulist(val))
        except (ValueError, IndexError):
            problems.add(f"garbled line in {proc / str(pid) / 'status'}: {key}")
    stat = read_text(proc / str(pid) / "stat", problems, quiet_missing=True, files=files)
    st = parse_stat(stat) if stat else None
    if st is not None:
        b.starttime = st.starttime
    cmd = read_cmdline(proc, pid, files)
    b.cmdline = cmd or ()
    b.problems = problems.items
    return b


def read_environ(proc: Path, pid: int, problems: Problems) -> dict[str, str] | None:
    """The full environment of a process, unmasked (for the launcher only; never display it)."""
    path = proc / str(pid) / "environ"
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.add(describe_oserror(path, exc))
        return None
    env: dict[str, str] = {}
    for item in data.split(b"\x00"):
        if b"=" in item:
            k, _, v = item.partition(b"=")
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def relevant_env(env: dict[str, str]) -> dict[str, str]:
    """The NUMA/threading-relevant subset of an environment, with secrets masked."""
    return mask_env({k: v for k, v in sorted(env.items()) if k.startswith(ENV_PREFIXES)})


def read_link(proc: Path, pid: int, name: str, problems: Problems) -> str | None:
    path = proc / str(pid) / name
    try:
        return os.readlink(path)
    except OSError as exc:
        problems.add(describe_oserror(path, exc))
        return None


def user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _ppid_of(path: str) -> int | None:
    """The parent PID field of a ``stat`` file (None when unreadable or garbled)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # fields after the comm, which is in parentheses and may contain anything
    rest = data[data.rfind(b")") + 1 :].split(None, 2)
    if len(rest) < 3 or data.find(b"(") < 0:
        return None
    try:
        return int(rest[1])
    except ValueError:
        return None


def children_map(proc: Path, pids: list[int] | None = None) -> dict[int, list[int]]:
    """ppid → children for every process (one pass over /proc/*/stat, reading only the ppid)."""
    out: dict[int, list[int]] = {}
    base = str(proc)
    for pid in pids if pids is not None else list_pids(proc):
        ppid = _ppid_of(f"{base}/{pid}/stat")
        if ppid is not None:
            out.setdefault(ppid, []).append(pid)
    return out
