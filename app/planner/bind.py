"""Which CPUs and which memory node each rank gets, as vLLM's ``VLLM_CPU_OMP_THREADS_BIND`` decides.

vLLM 0.32 (``utils/ompmultiprocessing.py``, ``v1/worker/cpu_worker.py``):

- ``auto``: the allowed memory nodes (the process's ``Mems_allowed``: nodes with memory) in id
  order; local rank *i* takes the CPUs of the *i*-th node, one logical CPU per physical core (the
  highest-numbered sibling on x86), sorted by id. vLLM asserts there are at least as many nodes as
  local ranks. Then ``VLLM_CPU_NUM_OF_RESERVED_CPU`` CPUs (default: one per local rank) are taken
  off the ends of the ranks' lists, ``n // ranks`` each and the remainder from the last ranks —
  unless the ranks have no more CPUs than that in total.
- explicit ``a-b,c|d-e``: one list per local rank (asserted), parsed with ``int()``.
- ``nobind``: no thread binding.
- Each worker then binds its memory strictly (``numa_set_membind`` + strict) to the node of the
  first CPU of its affinity at start-up: with OpenMP's affinity applied at load (libgomp, which
  vLLM preloads) that is the first CPU of its list; under ``nobind`` it is the first allowed CPU,
  so every rank binds to the same node. Releases before the node-memory checks bound memory only
  when they bound threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import Topology


@dataclass
class Layout:
    """CPUs per local rank, the memory node each rank binds to (None = not bound), and problems."""

    mode: str
    cpus: list[tuple[int, ...]] = field(default_factory=list)
    mem_nodes: list[int | None] = field(default_factory=list)
    reserved: tuple[int, ...] = ()
    #: the messages vLLM itself raises (the engine does not start)
    errors: list[str] = field(default_factory=list)
    #: the planner's own warnings (the engine starts, but not as the user likely meant)
    warnings: list[str] = field(default_factory=list)

    @property
    def pinned(self) -> bool:
        return self.mode != "nobind"


def memory_nodes(topology: Topology) -> list[int]:
    """Nodes a default process may allocate from (``Mems_allowed``: nodes with memory), by id."""
    return sorted(n.id for n in topology.nodes if n.memory is not None and n.memory.total_bytes > 0)


def _online_cpus(topology: Topology) -> list[int]:
    if topology.cpus_online:
        return sorted(topology.cpus_online)
    return sorted(c.id for c in topology.cpus if c.online)


def _vllm_parse_id_list(raw: str) -> list[int]:
    """vLLM's ``parse_id_list``: ``'0-2,4'`` → [0, 1, 2, 4]; raises ValueError like int() does."""
    out: list[int] = []
    if not raw:
        return out
    for part in raw.split(","):
        if "-" in part:
            start, end = map(int, part.split("-"))
            out.extend(range(start, end + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def _first_cpu_node(cpus: list[int] | tuple[int, ...], cpu_node: dict[int, int], allowed: list[int]) -> int | None:
    if not cpus or not allowed:
        return allowed[0] if allowed else None
    node = cpu_node.get(min(cpus))
    return node if node in allowed else allowed[0]


def default_reserved(local_world_size: int) -> int:
    """vLLM 0.32 on x86: one CPU per local rank for the engine's own process."""
    return local_world_size


def auto_layout(topology: Topology, lws: int, reserved_cpus: int | None, modern: bool = True) -> Layout:
    lay = Layout(mode="auto")
    allowed = memory_nodes(topology)
    if len(allowed) < lws:
        lay.errors.append(
            f"AssertionError: Not enough allowed NUMA nodes to bind threads of {lws} local CPUWorkers. "
            f"Allowed NUMA nodes are {allowed}. Please try to bind threads manually or decrease DP/TP/PP."
        )
        return lay
    by_core = _cores_by_node(topology)
    online = set(_online_cpus(topology))
    lists: list[list[int]] = []
    for rank in range(lws):
        cores = by_core.get(allowed[rank], {})
        # x86: the last logical CPU of each physical core
        lists.append(sorted(sorted(ids)[-1] for ids in cores.values()))
    return _reserve_and_bind(topology, lay, lists, allowed, online, lws, reserved_cpus, modern)


_CORES: dict[int, tuple[Topology, dict[int, dict[tuple, list[int]]]]] = {}


def _cores_by_node(topology: Topology) -> dict[int, dict[tuple, list[int]]]:
    """{node: {physical core key: [online CPU ids]}} (cached per topology object)."""
    hit = _CORES.get(id(topology))
    if hit is not None and hit[0] is topology:
        return hit[1]
    online = set(_online_cpus(topology))
    by_core: dict[int, dict[tuple, list[int]]] = {}
    for c in topology.cpus:
        if c.id not in online or c.node is None:
            continue
        # lscpu's CORE: one id per physical core; the sibling set says it best (core_id repeats across
        # packages, and some machines give every core of a package the same core_id)
        if c.siblings:
            key: tuple = ("sib", tuple(sorted(c.siblings)))
        elif c.core_id is not None:
            key = ("core", c.package, c.core_id)
        else:
            key = ("cpu", c.id)
        by_core.setdefault(c.node, {}).setdefault(key, []).append(c.id)
    if len(_CORES) > 64:
        _CORES.clear()
    _CORES[id(topology)] = (topology, by_core)
    return by_core


def _reserve_and_bind(
    topology: Topology,
    lay: Layout,
    lists: list[list[int]],
    allowed: list[int],
    online: set[int],
    lws: int,
    reserved_cpus: int | None,
    modern: bool,
) -> Layout:
    reserve = default_reserved(lws) if reserved_cpus is None else max(0, reserved_cpus)
    total = sum(len(x) for x in lists)
    reserved: list[int] = []
    if total <= reserve:
        if reserve:
            lay.warnings.append(
                f"auto bind: the ranks have {total} CPUs, not more than the {reserve} to reserve: vLLM reserves none"
            )
    else:
        per = [reserve // lws] * lws
        for i in range(lws - 1, lws - 1 - reserve % lws, -1):
            per[i] += 1
        for i, num in enumerate(per):
            if num > 0:
                reserved.extend(lists[i][-num:])
                lists[i] = lists[i][:-num]
    lay.reserved = tuple(reserved)
    cpu_node = topology.cpu_to_node()
    for rank, cpus in enumerate(lists):
        lay.cpus.append(tuple(cpus))
        if not cpus:
            lay.errors.append(
                f"auto bind gives rank {rank} node {allowed[rank]}, which has no usable CPU: its OpenMP threads "
                f"would get OMP_NUM_THREADS=0 (the planner's check)"
            )
            lay.mem_nodes.append(_first_cpu_node(sorted(online), cpu_node, allowed) if modern else allowed[rank])
        else:
            lay.mem_nodes.append(_first_cpu_node(cpus, cpu_node, allowed))
    return lay


def explicit_layout(topology: Topology, spec: str, lws: int) -> Layout:
    lay = Layout(mode="explicit")
    parts = spec.split("|")
    if len(parts) != lws:
        lay.errors.append(f"AssertionError: Given number of CPU id list {parts} doesn't match local world size {lws}.")
        return lay
    parsed: list[list[int]] = []
    for part in parts:
        try:
            parsed.append(_vllm_parse_id_list(part))
        except ValueError as exc:
            lay.errors.append(f"ValueError: {exc}")
            return lay
    online = set(_online_cpus(topology))
    allowed = memory_nodes(topology)
    cpu_node = topology.cpu_to_node()
    seen: dict[int, int] = {}
    for rank, cpus in enumerate(parsed):
        bad = [c for c in cpus if c not in online]
        good = [c for c in cpus if c in online]
        if bad:
            lay.errors.append(
                f"rank {rank}: CPU list {parts[rank]!r} names CPUs that are not online here ({format_cpulist(bad)}; "
                f"online: {format_cpulist(sorted(online))}): OpenMP cannot place threads there (the planner's check)"
            )
        if not good:
            lay.errors.append(f"rank {rank}: no usable CPU in {parts[rank]!r} (the planner's check)")
        for c in good:
            if c in seen and seen[c] != rank:
                lay.warnings.append(
                    f"CPU {c} is in the lists of rank {seen[c]} and rank {rank}: their threads compete for it"
                )
                break
            seen[c] = rank
        lay.cpus.append(tuple(good))
        lay.mem_nodes.append(_first_cpu_node(good, cpu_node, allowed))
    return lay


def nobind_layout(topology: Topology, lws: int, modern: bool) -> Layout:
    lay = Layout(mode="nobind")
    online = tuple(_online_cpus(topology))
    allowed = memory_nodes(topology)
    node = _first_cpu_node(online, topology.cpu_to_node(), allowed) if modern else None
    for _ in range(lws):
        lay.cpus.append(online)
        lay.mem_nodes.append(node)
    return lay


def layout(topology: Topology, bind: str, lws: int, reserved_cpus: int | None, modern: bool) -> Layout:
    """The layout for a ``VLLM_CPU_OMP_THREADS_BIND`` value."""
    bind = bind.strip()
    if bind == "auto":
        return auto_layout(topology, lws, reserved_cpus, modern)
    if bind in ("nobind", "all") or (bind == "" and not modern):
        return nobind_layout(topology, lws, modern)
    return explicit_layout(topology, bind, lws)


def node_split_spec(topology: Topology, nodes: list[int], per_node: int = 1, reserve_last: bool = True) -> str:
    """An explicit bind spec giving ``per_node`` ranks to each node in ``nodes`` (one CPU per core).

    With ``reserve_last`` the last CPU of each node is left for the engine process, like ``auto`` does.
    """
    lay = auto_layout(topology, len(memory_nodes(topology)), reserved_cpus=0)
    by_node = {}
    allowed = memory_nodes(topology)
    for i, n in enumerate(allowed):
        if i < len(lay.cpus):
            by_node[n] = list(lay.cpus[i])
    lists: list[str] = []
    for n in nodes:
        cpus = by_node.get(n, [])
        if reserve_last and len(cpus) > per_node:
            cpus = cpus[:-1]
        size = len(cpus) // per_node if per_node else 0
        for k in range(per_node):
            chunk = cpus[k * size : (k + 1) * size]
            lists.append(format_cpulist(chunk) if chunk else "")
    return "|".join(lists)
