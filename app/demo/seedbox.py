"""The story's machine, generated: 2 × Xeon Platinum 8581C, 120 CPUs, 8 NUMA nodes of 32 GB.

``write_seed_sysfs`` writes a sysfs/procfs tree with the same files the kernel shows, so the
real readers, the demo and the planner all run on it exactly as on a gathered machine.
Distances are a typical SNC4 table: 10 local, 12 same socket, 21 remote.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import Topology
from numatop_llm.probes.roots import SysRoots

SOCKETS = 2
NODES_PER_SOCKET = 4
CORES_PER_NODE = 15
#: MemTotal of each node: 32 GiB of DIMMs less what firmware and the kernel keep
NODE_TOTAL_KIB = [32_716_800, 32_979_968, 32_979_968, 32_979_968, 32_948_224, 32_979_968, 32_979_968, 32_979_968]
#: what the OS, page cache and other services use per node before vLLM starts
NODE_BASE_USED_KIB = [1_572_864, 524_288, 491_520, 458_752, 1_048_576, 393_216, 393_216, 425_984]
MODEL_NAME = "2 × Intel Xeon Platinum 8581C (seed box)"


def node_cpus(node: int) -> list[int]:
    return list(range(node * CORES_PER_NODE, (node + 1) * CORES_PER_NODE))


def distance(a: int, b: int) -> int:
    if a == b:
        return 10
    return 12 if a // NODES_PER_SOCKET == b // NODES_PER_SOCKET else 21


def node_meminfo(node: int, used_kib: int) -> str:
    total = NODE_TOTAL_KIB[node]
    used = min(total - 65536, used_kib)
    free = total - used
    file_pages = min(used // 3, 262_144)
    anon = used - file_pages
    rows = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemUsed", used),
        ("Active", anon // 2 + file_pages // 2),
        ("Inactive", anon // 2 + file_pages // 2),
        ("Active(anon)", anon // 2),
        ("Inactive(anon)", anon // 2),
        ("Active(file)", file_pages // 2),
        ("Inactive(file)", file_pages // 2),
        ("Unevictable", 0),
        ("Mlocked", 0),
        ("Dirty", 0),
        ("Writeback", 0),
        ("FilePages", file_pages),
        ("Mapped", file_pages // 4),
        ("AnonPages", anon),
        ("Shmem", 8192),
        ("KernelStack", 16384),
        ("PageTables", 8192),
        ("Slab", 131072),
        ("SReclaimable", 65536),
        ("SUnreclaim", 65536),
    ]
    lines = [f"Node {node} {k + ':':<16}{v:>12} kB" for k, v in rows]
    lines += [
        f"Node {node} HugePages_Total:     0",
        f"Node {node} HugePages_Free:      0",
        f"Node {node} HugePages_Surp:      0",
    ]
    return "\n".join(lines) + "\n"


def write_seed_sysfs(dest: Path, used_kib: list[int] | None = None) -> SysRoots:
    """Write the seed box as a sysfs + procfs tree under ``dest`` and return its roots."""
    used = used_kib or NODE_BASE_USED_KIB
    sysd = dest / "sys" / "devices" / "system"
    procd = dest / "proc"
    nodes = list(range(SOCKETS * NODES_PER_SOCKET))
    ncpu = len(nodes) * CORES_PER_NODE
    (procd).mkdir(parents=True, exist_ok=True)

    def w(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    all_cpus = format_cpulist(range(ncpu))
    for name in ("online", "possible", "present"):
        w(sysd / "cpu" / name, all_cpus + "\n")
    w(sysd / "cpu" / "offline", "\n")
    w(sysd / "cpu" / "kernel_max", "8191\n")
    for n in nodes:
        for core, cpu in enumerate(node_cpus(n)):
            t = sysd / "cpu" / f"cpu{cpu}" / "topology"
            w(sysd / "cpu" / f"cpu{cpu}" / "online", "1\n")
            w(t / "physical_package_id", f"{n // NODES_PER_SOCKET}\n")
            w(t / "core_id", f"{(n % NODES_PER_SOCKET) * CORES_PER_NODE + core}\n")
            w(t / "core_cpus_list", f"{cpu}\n")
            w(t / "thread_siblings_list", f"{cpu}\n")
            w(t / "package_cpus_list", format_cpulist(range((n // 4) * 60, (n // 4) * 60 + 60)) + "\n")
    node_list = format_cpulist(nodes) + "\n"
    for name in ("online", "possible", "has_cpu", "has_memory", "has_normal_memory"):
        w(sysd / "node" / name, node_list)
    total_kib = 0
    free_kib = 0
    for n in nodes:
        nd = sysd / "node" / f"node{n}"
        cpus = node_cpus(n)
        w(nd / "cpulist", format_cpulist(cpus) + "\n")
        mask = sum(1 << c for c in cpus)
        words = [f"{(mask >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range((ncpu + 31) // 32))]
        w(nd / "cpumap", ",".join(words) + "\n")
        w(nd / "distance", " ".join(str(distance(n, m)) for m in nodes) + "\n")
        w(nd / "meminfo", node_meminfo(n, used[n]))
        w(
            nd / "numastat",
            "numa_hit 1000000\nnuma_miss 0\nnuma_foreign 0\ninterleave_hit 1000\nlocal_node 1000000\nother_node 0\n",
        )
        total_kib += NODE_TOTAL_KIB[n]
        free_kib += NODE_TOTAL_KIB[n] - used[n]
    w(
        procd / "meminfo",
        f"MemTotal:       {total_kib} kB\nMemFree:        {free_kib} kB\nMemAvailable:   {free_kib} kB\n",
    )
    cpuinfo = "".join(
        f"processor\t: {c}\nmodel name\t: Intel(R) Xeon(R) Platinum 8581C CPU @ 2.30GHz\n"
        f"physical id\t: {c // 60}\ncore id\t\t: {c % 60}\n\n"
        for c in range(ncpu)
    )
    w(procd / "cpuinfo", cpuinfo)
    w(procd / "sys" / "kernel" / "hostname", "seedbox-8581c\n")
    w(procd / "sys" / "kernel" / "osrelease", "6.8.0-seedbox\n")
    return SysRoots(proc=procd, sys=dest / "sys")


@cache
def seed_roots() -> SysRoots:
    """The seed box tree, written once per process into a temporary directory (removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="numatop-seedbox-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return write_seed_sysfs(tmp)


def seed_topology() -> Topology:
    """The seed box as the real topology reader sees it."""
    from numatop_llm.probes.topology import read_topology

    return read_topology(seed_roots())


def write_box_sysfs(
    dest: Path,
    *,
    sockets: int = 4,
    nodes_per_socket: int = 4,
    cores_per_node: int = 32,
    smt: int = 2,
    node_gib: int = 64,
    hostname: str = "bigbox-16n",
) -> SysRoots:
    """A larger generated machine (default: 4 sockets × 4 nodes × 32 cores × 2 threads = 256 CPUs).

    CPU numbering follows Linux on Intel: first threads of all cores, then their siblings.
    Used for the 16-node views and the scaling benchmark; the seed box stays the story's machine.
    """
    sysd = dest / "sys" / "devices" / "system"
    procd = dest / "proc"
    nodes = list(range(sockets * nodes_per_socket))
    cores = len(nodes) * cores_per_node
    ncpu = cores * smt

    def w(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def cpus_of(n: int) -> list[int]:
        first = range(n * cores_per_node, (n + 1) * cores_per_node)
        return sorted(c + t * cores for t in range(smt) for c in first)

    all_cpus = format_cpulist(range(ncpu))
    for name in ("online", "possible", "present"):
        w(sysd / "cpu" / name, all_cpus + "\n")
    w(sysd / "cpu" / "offline", "\n")
    for n in nodes:
        pkg = n // nodes_per_socket
        for cpu in cpus_of(n):
            core = cpu % cores
            t = sysd / "cpu" / f"cpu{cpu}" / "topology"
            w(sysd / "cpu" / f"cpu{cpu}" / "online", "1\n")
            w(t / "physical_package_id", f"{pkg}\n")
            w(t / "core_id", f"{core % (cores_per_node * nodes_per_socket)}\n")
            w(t / "thread_siblings_list", format_cpulist([core + i * cores for i in range(smt)]) + "\n")
    node_list = format_cpulist(nodes) + "\n"
    for name in ("online", "possible", "has_cpu", "has_memory", "has_normal_memory"):
        w(sysd / "node" / name, node_list)
    total_kib = node_gib * 1024 * 1024
    for n in nodes:
        nd = sysd / "node" / f"node{n}"
        w(nd / "cpulist", format_cpulist(cpus_of(n)) + "\n")
        dist = [10 if m == n else 12 if m // nodes_per_socket == n // nodes_per_socket else 32 for m in nodes]
        w(nd / "distance", " ".join(map(str, dist)) + "\n")
        used = 2 * 1024 * 1024 + n * 1024 * 1024
        w(
            nd / "meminfo",
            f"Node {n} MemTotal: {total_kib} kB\nNode {n} MemFree: {total_kib - used} kB\n"
            f"Node {n} FilePages: {used // 4} kB\nNode {n} AnonPages: {used // 2} kB\n"
            f"Node {n} Active(file): {used // 8} kB\nNode {n} Inactive(file): {used // 8} kB\n"
            f"Node {n} SReclaimable: 65536 kB\nNode {n} HugePages_Total: 0\nNode {n} HugePages_Free: 0\n",
        )
    w(procd / "meminfo", f"MemTotal: {total_kib * len(nodes)} kB\nMemFree: {total_kib * len(nodes)} kB\n")
    w(procd / "sys" / "kernel" / "hostname", hostname + "\n")
    w(procd / "sys" / "kernel" / "osrelease", "6.8.0-bigbox\n")
    return SysRoots(proc=procd, sys=dest / "sys")
