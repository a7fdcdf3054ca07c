"""cgroup v2 limits and usage for a process: memory.max/current/events, cpuset, memory.numa_stat."""

from __future__ import annotations

from pathlib import Path

from probes.cpulist import parse_cpulist
from probes.models import Cgroup
from probes.roots import SysRoots
from probes.textio import Problems, read_text


def cgroup_path(roots: SysRoots, pid: int, problems: Problems) -> str | None:
    """The unified (v2) cgroup path of a process, e.g. ``/system.slice/vllm.service``."""
    text = read_text(roots.proc / str(pid) / "cgroup", problems)
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _limit(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def parse_numa_stat(text: str) -> dict[int, int]:
    """Per-node bytes of anon + file from ``memory.numa_stat`` (``anon N0=123 N1=0``)."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("anon", "file", "shmem_thp", "kernel_stack", "unevictable"):
            continue
        if parts[0] not in ("anon", "file"):
            continue
        for tok in parts[1:]:
            k, _, v = tok.partition("=")
            if k.startswith("N") and k[1:].isdigit() and v.isdigit():
                out[int(k[1:])] = out.get(int(k[1:]), 0) + int(v)
    return out


def read_cgroup_dir(directory: Path, rel: str) -> Cgroup:
    """Read the files of one cgroup v2 directory (missing files give defaults)."""
    quiet = Problems()
    events: dict[str, int] = {}
    ev = read_text(directory / "memory.events", quiet, quiet_missing=True)
    for line in (ev or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            events[parts[0]] = int(parts[1])

    def lst(name: str) -> tuple[int, ...]:
        t = read_text(directory / name, quiet, quiet_missing=True)
        try:
            return tuple(parse_cpulist(t)) if t else ()
        except ValueError:
            return ()

    ns = read_text(directory / "memory.numa_stat", quiet, quiet_missing=True)
    return Cgroup(
        path=rel,
        memory_max=_limit(read_text(directory / "memory.max", quiet, quiet_missing=True)),
        memory_current=_limit(read_text(directory / "memory.current", quiet, quiet_missing=True)),
        oom_events=events.get("oom", 0),
        oom_kill_events=events.get("oom_kill", 0),
        cpus_effective=lst("cpuset.cpus.effective"),
        mems_effective=lst("cpuset.mems.effective"),
        numa_node_bytes=parse_numa_stat(ns) if ns else {},
    )


def read_cgroup(roots: SysRoots, pid: int, problems: Problems) -> Cgroup | None:
    rel = cgroup_path(roots, pid, problems)
    if rel is None:
        return None
    directory = roots.cgroup_dir / rel.lstrip("/")
    if not directory.is_dir():
        return None
    return read_cgroup_dir(directory, rel)
