"""The machine as it would be after a BIOS change: fewer or more NUMA nodes per socket, or interleaved nodes.

Sub-NUMA clustering (Intel SNC2/SNC4) and AMD's NPS1/2/4 split a socket's cores and memory
channels into NUMA nodes; turning them off (or interleaving a set of nodes' memory in the BIOS)
makes the kernel report the union as one node: its CPUs, the sum of its memory, distance 10 inside
it. ``derive`` builds that machine from a live topology or a fixture, as the kernel would report it:

- **merge** (fewer nodes per socket, or ``interleave`` sets): consecutive nodes of a socket become
  one node; every memory counter is the sum of the parts; the distance between two new nodes is the
  mean of the old distances between their parts (a socket's SNC4 nodes at 21 from the other
  socket's stay 21; SNC4 → SNC2 keeps 12 between a socket's two halves).
- **split** (more nodes per socket): each node's physical cores are cut into equal consecutive
  parts and its memory into equal shares; two parts of one node get the socket's existing
  sub-NUMA distance, or 12 (assumed, and said so) when the socket has one node today. Whether the
  BIOS offers that many nodes depends on the CPU: say so, never promise it.

Node ids are dense, socket by socket, as Linux numbers them; nodes without CPUs (CXL, HBM) keep
their place after the sockets' nodes. What cannot be derived (uneven parts, a node spanning
sockets) raises :class:`MachineError` with one line.

Every derived machine keeps its **memory domains**: the finest partition known (the original
nodes when merging, the new nodes when splitting), with each derived node's share of each
domain. A merged node's pages are spread by the memory controller over its domains in proportion
to their memory (that is what interleaving means), so the placement cost can say how much of a
rank's traffic still crosses between domains after the kernel stopped seeing them
(``numatop_llm.planner.placement``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from numatop_llm.probes.cpulist import format_cpulist, parse_cpulist
from numatop_llm.probes.models import Node, NodeMemory, Package, Topology

LOCAL_DISTANCE = 10
#: a socket's sub-NUMA distance when the machine shows none today (Intel's SNC tables say 12)
ASSUMED_SUB_NUMA_DISTANCE = 12


class MachineError(ValueError):
    """A machine what-if that cannot be derived from this topology (one line, for the user)."""


class Machine(BaseModel):
    """A machine to plan for: the topology the kernel would report, and what it takes to get there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topology: Topology
    #: one line: which machine this is ("as it is: 8 nodes, 4 per socket", "1 node per socket (SNC off)")
    label: str
    #: NUMA nodes per socket of this machine ({socket: count}; CPU-less nodes not counted)
    nodes_per_socket: dict[int, int] = Field(default_factory=dict)
    #: the machine's memory domains (the finest partition known): their distances
    domain_distances: dict[int, dict[int, int]] = Field(default_factory=dict)
    #: {node of ``topology``: {domain: share of the node's memory}}
    node_domains: dict[int, dict[int, float]] = Field(default_factory=dict)
    #: {CPU: the domain its memory controller is in}
    cpu_domain: dict[int, int] = Field(default_factory=dict)
    #: {node of ``topology``: the original nodes it is made of}
    derived_from: dict[int, tuple[int, ...]] = Field(default_factory=dict)
    #: what the operator changes to get this machine (empty: the machine as it is)
    changes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_whatif(self) -> bool:
        return bool(self.changes)

    @property
    def needs_reboot(self) -> bool:
        """True when the machine differs from the one it was derived from (a BIOS change and a reboot)."""
        return bool(self.changes)

    def to_json(self) -> dict:
        """What ``plan --json`` prints under ``machine``."""
        return {
            "label": self.label,
            "whatif": self.is_whatif,
            "nodes": len(self.topology.nodes),
            "nodes_per_socket": {str(k): v for k, v in sorted(self.nodes_per_socket.items())},
            "node_list": [
                {
                    "node": n.id,
                    "cpus": format_cpulist(n.cpus),
                    "total_bytes": n.memory.total_bytes if n.memory else None,
                    "available_bytes": n.memory.vllm_available_bytes if n.memory else None,
                    "distances": [n.distances.get(m.id) for m in self.topology.nodes],
                    "from_nodes": list(self.derived_from.get(n.id, (n.id,))),
                }
                for n in self.topology.nodes
            ],
            "changes": list(self.changes),
            "notes": list(self.notes),
        }


def socket_nodes(topology: Topology) -> dict[int, list[int]]:
    """{socket: its nodes with CPUs, by id}; a node whose CPUs span sockets raises MachineError."""
    out: dict[int, list[int]] = {}
    for n in sorted(topology.nodes, key=lambda n: n.id):
        if not n.cpus:
            continue
        pkgs = {c.package for c in topology.cpus if c.id in set(n.cpus) and c.package is not None}
        if len(pkgs) > 1:
            raise MachineError(f"node {n.id} has CPUs on sockets {sorted(pkgs)}: the machine cannot be re-derived")
        pkg = pkgs.pop() if pkgs else (n.package if n.package is not None else 0)
        out.setdefault(pkg, []).append(n.id)
    return out


def nodes_per_socket(topology: Topology) -> dict[int, int]:
    try:
        return {s: len(ns) for s, ns in socket_nodes(topology).items()}
    except MachineError:
        return {}


def as_is(topology: Topology) -> Machine:
    """The machine unchanged: every node is its own memory domain."""
    per = nodes_per_socket(topology)
    counts = sorted(set(per.values()))
    desc = f"{counts[0]} per socket" if len(counts) == 1 else "uneven per socket"
    return Machine(
        topology=topology,
        label=f"as it is: {len(topology.nodes)} node(s), {desc}",
        nodes_per_socket=per,
        domain_distances={n.id: dict(n.distances) for n in topology.nodes},
        node_domains={n.id: {n.id: 1.0} for n in topology.nodes},
        cpu_domain=topology.cpu_to_node(),
        derived_from={n.id: (n.id,) for n in topology.nodes},
    )


def parse_interleave_sets(text: str) -> list[list[int]]:
    """``0-3|4-7`` → [[0, 1, 2, 3], [4, 5, 6, 7]] (one set per ``|``); ValueError on bad input."""
    sets: list[list[int]] = []
    for part in text.split("|"):
        part = part.strip()
        if not part:
            raise ValueError(f"empty node set in {text!r}")
        if not all(ch.isdigit() or ch in ",-" for ch in part):
            raise ValueError(f"bad node list {part!r} (want e.g. 0-3 or 0,2)")
        ids = parse_cpulist(part)
        if not ids:
            raise ValueError(f"bad node list {part!r}")
        sets.append(ids)
    return sets


def derive(
    topology: Topology,
    *,
    nodes_per_socket: int | None = None,
    interleave: Sequence[Sequence[int]] | None = None,
) -> Machine:
    """The machine with ``nodes_per_socket`` NUMA nodes per socket, or with each ``interleave`` set of
    nodes interleaved by the BIOS into one node. Neither: the machine as it is. Raises MachineError."""
    base = as_is(topology)
    if nodes_per_socket is None and not interleave:
        return base
    if nodes_per_socket is not None and interleave:
        raise MachineError("give either a node count per socket or interleave sets, not both")
    if interleave:
        return _interleave(topology, [list(s) for s in interleave])
    assert nodes_per_socket is not None
    if nodes_per_socket < 1:
        raise MachineError(f"nodes per socket must be ≥ 1 (got {nodes_per_socket})")
    per_socket = socket_nodes(topology)
    if not per_socket:
        raise MachineError("no node with CPUs on a known socket: nothing to re-derive")
    now = {s: len(ns) for s, ns in per_socket.items()}
    if set(now.values()) == {nodes_per_socket}:
        return base.model_copy(update={"notes": (f"the machine already has {nodes_per_socket} node(s) per socket",)})
    groups: list[_Part] = []
    notes: list[str] = []
    for sock in sorted(per_socket):
        ids = per_socket[sock]
        k = len(ids)
        if nodes_per_socket <= k:
            if k % nodes_per_socket:
                raise MachineError(
                    f"socket {sock} has {k} nodes ({format_cpulist(ids)}): they cannot be merged into "
                    f"{nodes_per_socket} equal nodes"
                )
            size = k // nodes_per_socket
            for i in range(nodes_per_socket):
                groups.append(_Part(members=tuple(ids[i * size : (i + 1) * size]), socket=sock))
        else:
            if nodes_per_socket % k:
                raise MachineError(
                    f"socket {sock} has {k} node(s): {nodes_per_socket} per socket is not a whole split of each"
                )
            groups.extend(_split(topology, ids, nodes_per_socket // k, sock, notes))
    changes = [_bios_words(nodes_per_socket, max(now.values()))]
    return _build(
        topology,
        groups,
        label=f"{nodes_per_socket} node(s) per socket ({_mode_name(nodes_per_socket)})",
        changes=changes,
        notes=notes,
    )


def _mode_name(n: int) -> str:
    return "SNC off / NPS1" if n == 1 else f"SNC{n} / NPS{n}"


def _bios_words(target: int, now: int) -> str:
    if target == 1:
        return (
            "BIOS: sub-NUMA clustering off (Intel SNC=disabled; AMD: NPS1): each socket's memory is interleaved "
            "across all its channels and the kernel reports one node per socket"
        )
    verb = "fewer" if target < now else "more"
    return (
        f"BIOS: {target} NUMA nodes per socket ({verb} than today's {now}; Intel SNC{target}, AMD NPS{target} — "
        "if the CPU offers it)"
    )


class _Part:
    """One node of the derived machine: whole original nodes (merge) or a share of one (split)."""

    def __init__(
        self,
        members: tuple[int, ...],
        socket: int | None,
        cpus: tuple[int, ...] | None = None,
        share: float = 1.0,
        sibling_distance: int | None = None,
        split_of: int | None = None,
    ) -> None:
        self.members = members
        self.socket = socket
        self.cpus = cpus
        self.share = share
        self.sibling_distance = sibling_distance
        self.split_of = split_of


def _split(topology: Topology, ids: list[int], parts: int, sock: int, notes: list[str]) -> list[_Part]:
    by_id = {n.id: n for n in topology.nodes}
    dist = [by_id[a].distances.get(b) for a in ids for b in ids if a != b and a in by_id]
    known = [d for d in dist if d]
    sibling = min(known) if known else ASSUMED_SUB_NUMA_DISTANCE
    if not known:
        notes.append(
            f"socket {sock}: no sub-NUMA distance to copy: the split's nodes are {ASSUMED_SUB_NUMA_DISTANCE} apart "
            "(assumed; the firmware's SLIT decides)"
        )
    notes.append(
        f"socket {sock}: a split into {parts * len(ids)} node(s) needs a CPU whose BIOS offers it (Intel SNC2/SNC4, "
        "AMD NPS2/NPS4) and equal memory on every channel"
    )
    out: list[_Part] = []
    for nid in ids:
        node = topology.node(nid)
        assert node is not None
        cores: dict[tuple, list[int]] = {}
        for c in topology.cpus:
            if c.id in set(node.cpus):
                key = tuple(sorted(c.siblings)) if c.siblings else (c.id,)
                cores.setdefault(key, []).append(c.id)
        ordered = sorted(cores.values(), key=min)
        if len(ordered) % parts:
            raise MachineError(f"node {nid} has {len(ordered)} cores: they cannot be split into {parts} equal nodes")
        size = len(ordered) // parts
        for i in range(parts):
            chunk = tuple(sorted(c for core in ordered[i * size : (i + 1) * size] for c in core))
            out.append(
                _Part(
                    members=(nid,), socket=sock, cpus=chunk, share=1.0 / parts, sibling_distance=sibling, split_of=nid
                )
            )
    return out


def _interleave(topology: Topology, sets: list[list[int]]) -> Machine:
    known = set(topology.node_ids)
    seen: set[int] = set()
    for s in sets:
        bad = [n for n in s if n not in known]
        if bad:
            raise MachineError(f"interleave set {format_cpulist(s)}: no node {format_cpulist(bad)} on this machine")
        if seen & set(s):
            raise MachineError(f"node(s) {format_cpulist(sorted(seen & set(s)))} are in two interleave sets")
        seen |= set(s)
    try:
        per_socket = socket_nodes(topology)
    except MachineError:
        per_socket = {}
    sock_of = {n: s for s, ns in per_socket.items() for n in ns}
    groups: list[_Part] = []
    for n in sorted(topology.node_ids):
        if n in seen:
            s = next(x for x in sets if n in x)
            if n == min(s):
                socks = {sock_of.get(m) for m in s}
                groups.append(_Part(members=tuple(sorted(s)), socket=socks.pop() if len(socks) == 1 else None))
        else:
            groups.append(_Part(members=(n,), socket=sock_of.get(n)))
    changes = []
    notes = []
    for s in sets:
        socks = {sock_of.get(m) for m in s}
        where = "one socket's" if len(socks) == 1 else "nodes on different sockets:"
        changes.append(
            f"BIOS: interleave the memory of nodes {format_cpulist(s)} ({where} memory channels): the kernel reports "
            "them as one node"
        )
        if len(socks) > 1:
            notes.append(
                f"nodes {format_cpulist(s)} span sockets: interleaving them sends about half of every access over "
                "the socket link (BIOS 'node interleaving' / NUMA off)"
            )
    machine = _build(
        topology,
        groups,
        label="interleave " + " | ".join(format_cpulist(s) for s in sets),
        changes=changes,
        notes=notes,
    )
    return machine


def _sum_memory(mems: Iterable[tuple[NodeMemory | None, float]]) -> NodeMemory | None:
    fields = NodeMemory.byte_fields()
    vals = {f: 0 for f in fields}
    numastat: dict[str, int] = {}
    any_mem = False
    for mem, share in mems:
        if mem is None:
            continue
        any_mem = True
        for f in fields:
            vals[f] += int(getattr(mem, f) * share)
        for k, v in mem.numastat.items():
            numastat[k] = numastat.get(k, 0) + int(v * share)
    if not any_mem:
        return None
    return NodeMemory(**vals, numastat=numastat)


def _build(topology: Topology, parts: list[_Part], *, label: str, changes: list[str], notes: list[str]) -> Machine:
    # Linux numbers nodes socket by socket; nodes without CPUs (socket None) come after
    cpu_parts = [p for p in parts if p.socket is not None or _part_cpus(topology, p)]
    mem_only = [p for p in parts if p not in cpu_parts]
    ordered = sorted(cpu_parts, key=lambda p: (p.socket if p.socket is not None else 1 << 20, _first(topology, p)))
    ordered += sorted(mem_only, key=lambda p: min(p.members))
    split = any(p.split_of is not None for p in ordered)
    new_ids = list(range(len(ordered)))
    by_id = {n.id: n for n in topology.nodes}

    def old_distance(a: int, b: int) -> int:
        na = topology.node(a)
        d = na.distances.get(b) if na else None
        return d if d else (LOCAL_DISTANCE if a == b else 20)

    def distance(i: int, j: int) -> int:
        if i == j:
            return LOCAL_DISTANCE
        pi, pj = ordered[i], ordered[j]
        if pi.split_of is not None and pi.split_of == pj.split_of:
            return pi.sibling_distance or ASSUMED_SUB_NUMA_DISTANCE
        ds = [old_distance(a, b) for a in pi.members for b in pj.members]
        return round(sum(ds) / len(ds))

    cpu_new_node: dict[int, int] = {}
    nodes: list[Node] = []
    for i, p in enumerate(ordered):
        cpus = _part_cpus(topology, p)
        for c in cpus:
            cpu_new_node[c] = i
        olds = [by_id[m] for m in p.members if m in by_id]
        all_cpus = cpus if p.cpus is not None else tuple(sorted(c for n in olds for c in n.cpulist_all))
        mem = _sum_memory((n.memory, p.share) for n in olds)
        nodes.append(
            Node(
                id=i,
                cpus=cpus,
                cpulist_all=all_cpus,
                distances={j: distance(i, j) for j in new_ids},
                memory=mem,
                package=p.socket,
            )
        )
    new_cpus = tuple(
        c.model_copy(update={"node": cpu_new_node[c.id]}) if c.id in cpu_new_node else c for c in topology.cpus
    )
    packages = tuple(
        Package(id=pk.id, cpus=pk.cpus, nodes=tuple(sorted({cpu_new_node[c] for c in pk.cpus if c in cpu_new_node})))
        for pk in topology.packages
    )
    new_topo = topology.model_copy(update={"nodes": tuple(nodes), "cpus": new_cpus, "packages": packages})
    derived_from = {i: tuple(p.members) for i, p in enumerate(ordered)}
    if split:
        # the new nodes are finer than the old: they are the domains
        domain_distances = {i: dict(n.distances) for i, n in enumerate(nodes)}
        node_domains = {i: {i: 1.0} for i in new_ids}
        cpu_domain = dict(cpu_new_node)
    else:
        domain_distances = {n.id: dict(n.distances) for n in topology.nodes}
        node_domains = {}
        for i, p in enumerate(ordered):
            totals = {m: _total(by_id.get(m)) for m in p.members}
            whole = sum(totals.values())
            node_domains[i] = {m: (t / whole if whole else 1.0 / len(p.members)) for m, t in totals.items()}
        cpu_domain = topology.cpu_to_node()
    notes = list(notes)
    notes.append(
        "memory figures of the derived nodes are the sums (or equal shares) of today's; the kernel's own reserves "
        "move by a few MiB per node"
    )
    return Machine(
        topology=new_topo,
        label=label,
        nodes_per_socket=nodes_per_socket(new_topo),
        domain_distances=domain_distances,
        node_domains=node_domains,
        cpu_domain=cpu_domain,
        derived_from=derived_from,
        changes=tuple(changes),
        notes=tuple(notes),
    )


def _part_cpus(topology: Topology, p: _Part) -> tuple[int, ...]:
    if p.cpus is not None:
        return p.cpus
    by_id = {n.id: n for n in topology.nodes}
    return tuple(sorted(c for m in p.members if m in by_id for c in by_id[m].cpus))


def _total(node: Node | None) -> int:
    return node.memory.total_bytes if node is not None and node.memory is not None else 0


def _first(topology: Topology, p: _Part) -> int:
    cpus = _part_cpus(topology, p)
    return min(cpus) if cpus else 1 << 30


def compare(expected: Topology, actual: Topology, mem_tolerance: float = 0.03) -> list[str]:
    """Differences between a derived machine and the one the kernel reports (empty: they match).

    Node count, each node's CPUs, the distance table, and each node's MemTotal within
    ``mem_tolerance`` (the kernel's per-node reserves differ by a few MiB)."""
    out: list[str] = []
    if len(expected.nodes) != len(actual.nodes):
        return [f"expected {len(expected.nodes)} nodes, the kernel reports {len(actual.nodes)}"]
    for e, a in zip(sorted(expected.nodes, key=lambda n: n.id), sorted(actual.nodes, key=lambda n: n.id), strict=True):
        if tuple(sorted(e.cpus)) != tuple(sorted(a.cpus)):
            out.append(f"node {a.id}: CPUs {format_cpulist(a.cpus)}, expected {format_cpulist(e.cpus)}")
        ed = [e.distances.get(n.id) for n in expected.nodes]
        ad = [a.distances.get(n.id) for n in actual.nodes]
        if ed != ad:
            out.append(f"node {a.id}: distances {ad}, expected {ed}")
        et = e.memory.total_bytes if e.memory else 0
        at = a.memory.total_bytes if a.memory else 0
        if et and abs(at - et) > mem_tolerance * et:
            out.append(
                f"node {a.id}: MemTotal {at / 2**30:.2f} GiB, expected {et / 2**30:.2f} GiB (±{mem_tolerance:.0%})"
            )
    return out


def restrict_cpus(topology: Topology, allowed: Iterable[int]) -> Topology:
    """The topology as a process whose CPU affinity is ``allowed`` sees it (``numactl --cpunodebind`` /
    ``--physcpubind``, ``taskset``): vLLM lists CPUs with ``sched_getaffinity``, so others are not usable."""
    keep = set(allowed)
    nodes = tuple(n.model_copy(update={"cpus": tuple(c for c in n.cpus if c in keep)}) for n in topology.nodes)
    cpus = tuple(c if c.id in keep else c.model_copy(update={"online": False}) for c in topology.cpus)
    online = tuple(c for c in topology.cpus_online if c in keep)
    return topology.model_copy(update={"nodes": nodes, "cpus": cpus, "cpus_online": online})


def visible_memory_nodes(topology: Topology, visible: Iterable[int]) -> Topology:
    """The topology as vLLM 0.32 sees it under ``CPU_VISIBLE_MEMORY_NODES``: other nodes offer it no memory
    (``get_visible_memory_node``: the listed nodes that are also in ``Mems_allowed``)."""
    keep = set(visible)
    nodes = tuple(n if n.id in keep else n.model_copy(update={"memory": None}) for n in topology.nodes)
    hidden = sum(n.memory.total_bytes for n in topology.nodes if n.id not in keep and n.memory is not None)
    sysmem = topology.system_mem_total_bytes
    return topology.model_copy(
        update={"nodes": nodes, "system_mem_total_bytes": None if sysmem is None else max(0, sysmem - hidden)}
    )
