"""cgroup limits and usage for a process: memory limit/usage/OOM kills, cpuset, per-node memory.

Reads cgroup v2 (unified, also the ``unified`` mount of a hybrid layout) and falls back to the v1
``memory`` and ``cpuset`` controllers, which older distributions and some containers still use.
"""

from __future__ import annotations

from pathlib import Path

from numatop_llm.probes.cpulist import parse_cpulist
from numatop_llm.probes.models import Cgroup
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.textio import Problems, read_text

#: v1 reports "no limit" as a page-aligned huge number
_V1_UNLIMITED = 1 << 60


def cgroup_paths(roots: SysRoots, pid: int, problems: Problems) -> dict[str, str]:
    """Controller → path from ``/proc/PID/cgroup``; the unified hierarchy is under key ``""``."""
    text = read_text(roots.proc / str(pid) / "cgroup", problems)
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path or "/"
        for c in controllers.split(","):
            if c:
                out[c] = path or "/"
    return out


def cgroup_path(roots: SysRoots, pid: int, problems: Problems) -> str | None:
    """The cgroup path that governs the process's memory (v2 path, else the v1 memory path)."""
    paths = cgroup_paths(roots, pid, problems)
    return paths.get("memory") or paths.get("")


def _limit(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _V1_UNLIMITED else value


def parse_numa_stat(text: str, page_size: int = 1) -> dict[int, int]:
    """Per-node bytes of anon + file from ``memory.numa_stat``.

    v2 lines read ``anon N0=123 N1=0`` (bytes); v1 lines read ``anon=5 N0=5`` (pages: pass
    ``page_size``).
    """
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        name = parts[0].partition("=")[0]
        if name not in ("anon", "file"):
            continue
        for tok in parts[1:]:
            k, _, v = tok.partition("=")
            if k.startswith("N") and k[1:].isdigit() and v.isdigit():
                out[int(k[1:])] = out.get(int(k[1:]), 0) + int(v) * page_size
    return out


def _events(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _list(directory: Path, *names: str) -> tuple[int, ...]:
    for name in names:
        t = read_text(directory / name, quiet_missing=True)
        if t:
            try:
                return tuple(parse_cpulist(t))
            except ValueError:
                return ()
    return ()


def read_cgroup_dir(directory: Path, rel: str) -> Cgroup:
    """Read the files of one cgroup v2 directory (missing files give defaults)."""
    events = _events(read_text(directory / "memory.events", quiet_missing=True))
    ns = read_text(directory / "memory.numa_stat", quiet_missing=True)
    return Cgroup(
        path=rel,
        memory_max=_limit(read_text(directory / "memory.max", quiet_missing=True)),
        memory_current=_limit(read_text(directory / "memory.current", quiet_missing=True)),
        oom_events=events.get("oom", 0),
        oom_kill_events=events.get("oom_kill", 0),
        cpus_effective=_list(directory, "cpuset.cpus.effective"),
        mems_effective=_list(directory, "cpuset.mems.effective"),
        numa_node_bytes=parse_numa_stat(ns) if ns else {},
    )


def read_cgroup_v1(mem_dir: Path, cpuset_dir: Path | None, rel: str, page_size: int) -> Cgroup:
    """Read a v1 ``memory`` controller directory (and the ``cpuset`` one when given)."""
    oom = _events(read_text(mem_dir / "memory.oom_control", quiet_missing=True))
    ns = read_text(mem_dir / "memory.numa_stat", quiet_missing=True)
    return Cgroup(
        path=rel,
        memory_max=_limit(read_text(mem_dir / "memory.limit_in_bytes", quiet_missing=True)),
        memory_current=_limit(read_text(mem_dir / "memory.usage_in_bytes", quiet_missing=True)),
        oom_events=oom.get("under_oom", 0),
        oom_kill_events=oom.get("oom_kill", 0),
        cpus_effective=_list(cpuset_dir, "cpuset.effective_cpus", "cpuset.cpus") if cpuset_dir else (),
        mems_effective=_list(cpuset_dir, "cpuset.effective_mems", "cpuset.mems") if cpuset_dir else (),
        numa_node_bytes=parse_numa_stat(ns, page_size) if ns else {},
    )


def memory_cgroup_dir(roots: SysRoots, pid: int, problems: Problems) -> tuple[Path, str, int] | None:
    """(directory, path, version) of the cgroup holding the process's memory limit."""
    paths = cgroup_paths(roots, pid, problems)
    base = roots.cgroup_dir
    if "" in paths:
        rel = paths[""]
        for mount in (base, base / "unified"):
            d = mount / rel.lstrip("/")
            if (d / "memory.max").is_file() or (d / "memory.current").is_file():
                return d, rel, 2
    if "memory" in paths:
        rel = paths["memory"]
        d = base / "memory" / rel.lstrip("/")
        if d.is_dir():
            return d, rel, 1
    return None


def read_cgroup(roots: SysRoots, pid: int, problems: Problems, page_size: int = 4096) -> Cgroup | None:
    found = memory_cgroup_dir(roots, pid, problems)
    if found is None:
        return None
    directory, rel, version = found
    if version == 2:
        return read_cgroup_dir(directory, rel)
    paths = cgroup_paths(roots, pid, Problems())
    cpuset = roots.cgroup_dir / "cpuset" / paths["cpuset"].lstrip("/") if "cpuset" in paths else None
    return read_cgroup_v1(directory, cpuset if cpuset and cpuset.is_dir() else None, rel, page_size)
