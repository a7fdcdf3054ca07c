"""NUMA layouts the test guests boot with, as QEMU ``-smp``/``-numa`` arguments.

Every layout names its nodes' CPUs and memory and the full distance table, so tests compare
what the guest's kernel reports with what was asked for. QEMU wants node ids dense from 0
(Linux would renumber them anyway), so sparse node ids are covered by the gathered sysfs
fixtures instead.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class NodeSpec:
    cpus: tuple[int, ...]
    mem_mib: int


@dataclass(frozen=True)
class Layout:
    name: str
    sockets: int
    cores_per_socket: int
    nodes: tuple[NodeSpec, ...]
    #: distances[i][j], symmetric, 10 on the diagonal
    distances: tuple[tuple[int, ...], ...]
    description: str = ""

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores_per_socket

    @property
    def mem_mib(self) -> int:
        return sum(n.mem_mib for n in self.nodes)

    def socket_of(self, cpu: int) -> int:
        return cpu // self.cores_per_socket

    def qemu_args(self) -> list[str]:
        """``-m``, ``-smp`` and ``-numa`` arguments for this layout."""
        args = [
            "-m",
            f"{self.mem_mib}M",
            "-smp",
            f"{self.cpus},sockets={self.sockets},cores={self.cores_per_socket},threads=1",
        ]
        for i, node in enumerate(self.nodes):
            args += ["-object", f"memory-backend-ram,size={node.mem_mib}M,id=m{i}"]
            spec = f"node,memdev=m{i},nodeid={i}"
            for lo, hi in _ranges(node.cpus):
                spec += f",cpus={lo}" if lo == hi else f",cpus={lo}-{hi}"
            args += ["-numa", spec]
        for i in range(len(self.nodes)):
            for j in range(len(self.nodes)):
                if i != j:
                    args += ["-numa", f"dist,src={i},dst={j},val={self.distances[i][j]}"]
        return args


def _ranges(cpus: tuple[int, ...]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(cpus):
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _seed8() -> Layout:
    nodes = tuple(NodeSpec(cpus=(2 * i, 2 * i + 1), mem_mib=512) for i in range(8))
    dist = tuple(tuple(10 if i == j else (12 if i // 4 == j // 4 else 21) for j in range(8)) for i in range(8))
    return Layout(
        name="seed8",
        sockets=2,
        cores_per_socket=8,
        nodes=nodes,
        distances=dist,
        description="the seed box scaled down: 2 sockets, 8 nodes (SNC4), 2 CPUs and 512 MiB each, 10/12/21",
    )


def _seed8_snc_off() -> Layout:
    """seed8 with sub-NUMA clustering off: each socket's four nodes are one node (CPUs and memory summed)."""
    seed = _seed8()
    nodes = tuple(
        NodeSpec(cpus=tuple(c for n in seed.nodes[s * 4 : s * 4 + 4] for c in n.cpus), mem_mib=4 * 512)
        for s in range(2)
    )
    return Layout(
        name="seed8-snc-off",
        sockets=2,
        cores_per_socket=8,
        nodes=nodes,
        distances=((10, 21), (21, 10)),
        description="seed8 after 'SNC off' in the BIOS: 2 nodes of 8 CPUs and 2 GiB, 10/21",
    )


UNEVEN4 = Layout(
    name="uneven4",
    sockets=3,
    cores_per_socket=2,
    nodes=(
        NodeSpec(cpus=(0, 1), mem_mib=768),
        NodeSpec(cpus=(2, 3), mem_mib=512),
        NodeSpec(cpus=(4, 5), mem_mib=256),
        NodeSpec(cpus=(), mem_mib=384),  # memory only, near node 0 (think CXL or HBM)
    ),
    distances=(
        (10, 21, 21, 17),
        (21, 10, 21, 28),
        (21, 21, 10, 28),
        (17, 28, 28, 10),
    ),
    description="4 nodes, uneven memory (768/512/256/384 MiB), node 3 has memory and no CPUs",
)

TWO_NODE = Layout(
    name="two-node",
    sockets=2,
    cores_per_socket=2,
    nodes=(NodeSpec(cpus=(0, 1), mem_mib=1024), NodeSpec(cpus=(2, 3), mem_mib=1024)),
    distances=((10, 21), (21, 10)),
    description="2 sockets, 2 nodes of 2 CPUs and 1 GiB",
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (_seed8(), _seed8_snc_off(), UNEVEN4, TWO_NODE)}
