"""Read the NUMA topology (nodes, CPUs, cores, sockets, distances) and per-node memory from sysfs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from numatop_llm.probes.cpulist import parse_cpulist, parse_cpumask
from numatop_llm.probes.models import Cpu, Node, NodeMemory, Package, Topology
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.textio import KeptFiles, Problems, read_int, read_text

_NODE_DIR = re.compile(r"^node(\d+)$")
_CPU_DIR = re.compile(r"^cpu(\d+)$")
_MEMINFO_LINE = re.compile(r"^(?:Node\s+\d+\s+)?([A-Za-z_()0-9]+):\s+(\d+)(?:\s*kB)?\s*$")


def _list_ids(directory: Path, pattern: re.Pattern[str]) -> list[int]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := pattern.match(n)))


def _read_list(path: Path, problems: Problems, *, quiet_missing: bool = True) -> list[int] | None:
    text = read_text(path, problems, quiet_missing=quiet_missing)
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except ValueError:
        problems.add(f"garbled list in {path}")
        return None


def _read_mask(path: Path, problems: Problems) -> list[int] | None:
    text = read_text(path, problems, quiet_missing=True)
    if text is None:
        return None
    try:
        return parse_cpumask(text)
    except ValueError:
        problems.add(f"garbled mask in {path}")
        return None


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse ``meminfo`` (system or per-node form) into {key: value}; kB values become bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _MEMINFO_LINE.match(line.strip())
        if not m:
            continue
        value = int(m.group(2))
        out[m.group(1)] = value * 1024 if line.rstrip().endswith("kB") else value
    return out


def parse_numastat(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_node_memory(
    roots: SysRoots, node_id: int, problems: Problems, files: KeptFiles | None = None
) -> NodeMemory | None:
    """One node's memory from ``nodeN/meminfo``, ``numastat`` and ``hugepages/``; None without meminfo."""
    ndir = roots.node_dir / f"node{node_id}"
    text = read_text(ndir / "meminfo", problems, quiet_missing=True, files=files)
    if text is None:
        return None
    mi = parse_meminfo(text)
    if "MemTotal" not in mi:
        problems.add(f"garbled: {ndir / 'meminfo'}")
        return None
    numastat_text = read_text(ndir / "numastat", problems, quiet_missing=True, files=files)
    huge_total = huge_free = 0
    hdir = ndir / "hugepages"
    try:
        pools = os.listdir(hdir)
    except OSError:
        pools = []
    for pool in pools:
        m = re.match(r"hugepages-(\d+)kB", pool)
        if not m:
            continue
        size = int(m.group(1)) * 1024
        huge_total += (read_int(hdir / pool / "nr_hugepages", problems, quiet_missing=True, files=files) or 0) * size
        huge_free += (read_int(hdir / pool / "free_hugepages", problems, quiet_missing=True, files=files) or 0) * size
    return node_memory_from(mi, parse_numastat(numastat_text) if numastat_text else {}, huge_total, huge_free)


def node_memory_from(
    mi: dict[str, int], numastat: dict[str, int], huge_total: int = 0, huge_free: int = 0
) -> NodeMemory:
    """A ``NodeMemory`` from parsed ``meminfo`` (bytes) and ``numastat`` figures."""
    total = mi.get("MemTotal", 0)
    free = mi.get("MemFree", 0)
    return NodeMemory(
        total_bytes=total,
        free_bytes=free,
        used_bytes=mi.get("MemUsed", max(0, total - free)),
        file_bytes=mi.get("FilePages", 0),
        anon_bytes=mi.get("AnonPages", 0),
        shmem_bytes=mi.get("Shmem", 0),
        active_file_bytes=mi.get("Active(file)", 0),
        inactive_file_bytes=mi.get("Inactive(file)", 0),
        sreclaimable_bytes=mi.get("SReclaimable", mi.get("KReclaimable", 0)),
        hugepages_total_bytes=huge_total,
        hugepages_free_bytes=huge_free,
        numastat=numastat,
    )


def _online_cpus(roots: SysRoots, present: list[int], problems: Problems) -> list[int]:
    online = _read_list(roots.cpu_dir / "online", problems)
    if online is not None:
        return online
    # Old kernels: no cpu/online; each CPU's own ``online`` file says ("0"/"1"); cpu0 often has none.
    out = []
    for cpu in present:
        flag = read_int(roots.cpu_dir / f"cpu{cpu}" / "online", problems, quiet_missing=True)
        if flag is None or flag == 1:
            out.append(cpu)
    return out


def _siblings(roots: SysRoots, cpu: int, problems: Problems) -> tuple[int, ...]:
    tdir = roots.cpu_dir / f"cpu{cpu}" / "topology"
    for name in ("core_cpus_list", "thread_siblings_list"):
        lst = _read_list(tdir / name, problems)
        if lst:
            return tuple(lst)
    for name in ("core_cpus", "thread_siblings"):
        lst = _read_mask(tdir / name, problems)
        if lst:
            return tuple(lst)
    return (cpu,)


def read_topology(roots: SysRoots, *, with_memory: bool = True) -> Topology:
    """Read nodes, CPUs, cores, packages and distances (and node memory) under ``roots``.

    Handles sparse node ids, CPU-less and memory-less nodes, offline CPUs, old kernels without
    ``cpu/online``, NUL bytes in list files, and distance rows that do not line up.
    """
    problems = Problems()
    if not roots.cpu_dir.is_dir():
        problems.add(f"no CPU information under {roots.cpu_dir}")
    cpu_dirs = _list_ids(roots.cpu_dir, _CPU_DIR)
    present = _read_list(roots.cpu_dir / "present", problems)
    if present is None:
        present = cpu_dirs
    online = _online_cpus(roots, present, problems)
    online_set = set(online)
    offline = sorted(set(present) - online_set)

    node_ids = _list_ids(roots.node_dir, _NODE_DIR)
    node_cpus_all: dict[int, list[int]] = {}
    for nid in node_ids:
        ndir = roots.node_dir / f"node{nid}"
        lst = _read_list(ndir / "cpulist", problems)
        if lst is None:
            lst = _read_mask(ndir / "cpumap", problems) or []
        node_cpus_all[nid] = lst
    synthetic = False
    if not node_ids:
        # A kernel without NUMA support: one node holding every CPU and all memory.
        synthetic = True
        node_ids = [0]
        node_cpus_all[0] = list(online)
        if roots.node_dir.exists() or cpu_dirs:
            problems.add("no NUMA nodes in sysfs: showing the machine as one node")

    cpu_node: dict[int, int] = {}
    for nid in node_ids:
        for c in node_cpus_all[nid]:
            cpu_node.setdefault(c, nid)

    cpus: list[Cpu] = []
    for cid in sorted(set(present) | online_set):
        is_online = cid in online_set
        tdir = roots.cpu_dir / f"cpu{cid}" / "topology"
        pkg = core = None
        sib: tuple[int, ...] = ()
        if is_online and tdir.is_dir():
            pkg = read_int(tdir / "physical_package_id", problems, quiet_missing=True)
            core = read_int(tdir / "core_id", problems, quiet_missing=True)
            sib = tuple(s for s in _siblings(roots, cid, problems) if s in online_set) or (cid,)
        cpus.append(Cpu(id=cid, online=is_online, node=cpu_node.get(cid), package=pkg, core_id=core, siblings=sib))

    pkg_cpus: dict[int, list[int]] = {}
    for cpu in cpus:
        if cpu.online and cpu.package is not None:
            pkg_cpus.setdefault(cpu.package, []).append(cpu.id)

    nodes: list[Node] = []
    for nid in node_ids:
        ndir = roots.node_dir / f"node{nid}"
        distances: dict[int, int] = {}
        row_text = None if synthetic else read_text(ndir / "distance", problems, quiet_missing=True)
        if row_text:
            try:
                row = [int(x) for x in row_text.split()]
            except ValueError:
                problems.add(f"garbled: {ndir / 'distance'}")
                row = []
            if len(row) == len(node_ids):
                distances = dict(zip(node_ids, row, strict=True))
            elif row:
                problems.add(f"node{nid}: distance row has {len(row)} entries for {len(node_ids)} nodes")
        elif synthetic:
            distances = {0: 10}
        node_online_cpus = tuple(c for c in node_cpus_all[nid] if c in online_set)
        pkgs = {c.package for c in cpus if c.id in node_online_cpus and c.package is not None}
        memory = None
        if with_memory:
            memory = read_node_memory(roots, nid, problems) if not synthetic else None
        nodes.append(
            Node(
                id=nid,
                cpus=node_online_cpus,
                cpulist_all=tuple(node_cpus_all[nid]),
                distances=distances,
                memory=memory,
                package=pkgs.pop() if len(pkgs) == 1 else None,
            )
        )

    sysmem: dict[str, int] = {}
    mtext = read_text(roots.proc / "meminfo", problems, quiet_missing=True)
    if mtext:
        sysmem = parse_meminfo(mtext)
    if synthetic and with_memory and sysmem.get("MemTotal"):
        nodes[0] = nodes[0].model_copy(
            update={
                "memory": NodeMemory(
                    total_bytes=sysmem["MemTotal"],
                    free_bytes=sysmem.get("MemFree", 0),
                    used_bytes=sysmem["MemTotal"] - sysmem.get("MemFree", 0),
                    file_bytes=sysmem.get("Cached", 0),
                    anon_bytes=sysmem.get("AnonPages", 0),
                    shmem_bytes=sysmem.get("Shmem", 0),
                    active_file_bytes=sysmem.get("Active(file)", 0),
                    inactive_file_bytes=sysmem.get("Inactive(file)", 0),
                    sreclaimable_bytes=sysmem.get("SReclaimable", 0),
                )
            }
        )

    packages = [
        Package(
            id=pid,
            cpus=tuple(sorted(cl)),
            nodes=tuple(sorted({cpu_node[c] for c in cl if c in cpu_node})),
        )
        for pid, cl in sorted(pkg_cpus.items())
    ]
    return Topology(
        nodes=tuple(nodes),
        cpus=tuple(cpus),
        packages=tuple(packages),
        cpus_online=tuple(online),
        cpus_offline=tuple(offline),
        system_mem_total_bytes=sysmem.get("MemTotal"),
        system_mem_available_bytes=sysmem.get("MemAvailable"),
        page_size_bytes=os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096,
        degraded=tuple(problems.items),
    )


def read_nodes_memory(
    roots: SysRoots, node_ids: list[int] | tuple[int, ...], files: KeptFiles | None = None
) -> tuple[dict[int, NodeMemory], list[str]]:
    """Re-read only node memory (cheap, every sample) for known node ids."""
    problems = Problems()
    out: dict[int, NodeMemory] = {}
    for nid in node_ids:
        mem = read_node_memory(roots, nid, problems, files)
        if mem is not None:
            out[nid] = mem
    return out, problems.items
