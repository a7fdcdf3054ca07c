"""Where a rank's pages land under a memory policy, and what that costs in remote traffic.

**The launcher's policy and vLLM's own.** ``numactl --interleave/--membind/--preferred`` on the
launch line sets the process's memory policy, which every child inherits. vLLM 0.32 then sets its
own in each worker: ``CPUWorker.__init__`` (``v1/worker/cpu_worker.py``) takes the node of the first
CPU in its affinity (or the first visible node when that one is not visible) and calls
``torch.ops._C.init_cpu_memory_env([node])``, which (its strings in ``_C.abi3.so``) migrates the
worker's existing pages to that node with ``numa_migrate_pages`` and sets a strict
``numa_set_membind`` — with one node; with several it would use ``numa_set_interleave_mask``, but
0.32 always passes one ("TODO: optimize for `interleaved` policy"). It does this for every
``VLLM_CPU_OMP_THREADS_BIND``, ``nobind`` included. So in 0.32 a launcher's ``--interleave`` or
``--membind`` never reaches a worker's weights or KV cache: only the API server and the engine
core keep it (and shared pages that ``migrate_pages`` may not move without ``CAP_SYS_NICE``).
What does reach the workers: ``--cpunodebind``/``--physcpubind`` (vLLM lists CPUs with
``sched_getaffinity``, so auto bind and the bind node follow them) and ``CPU_VISIBLE_MEMORY_NODES``
(which nodes vLLM may bind to; ignored under ``VLLM_CPU_SIM_MULTI_NUMA``). ``numactl --membind``
does not change ``Mems_allowed`` (a cpuset does), so it does not narrow vLLM's node list.
Releases before the node checks bound memory only when they bound threads: under ``nobind``
the launcher's policy holds.

**The kernel's placement.** Under ``MPOL_INTERLEAVE`` a page's node is the
``(vm_pgoff + page index in the mapping) mod n``-th node of the mask (``mm/mempolicy.c``,
``interleave_nid``): round-robin by virtual page offset, one (huge) page at a time, falling back to
other nodes when the chosen one is full. Under ``MPOL_BIND`` pages come from the mask's node
nearest the allocating CPU and nowhere else (OOM kill when full); ``MPOL_PREFERRED`` tries its
node first.

**The cost.** A rank's OpenMP threads (one per CPU of its list) read all of its pages, weights and
KV alike, so the share of its traffic that is remote is Σ over (thread domain t, page domain p)
of share(t) × share(p) for t ≠ p, and the average distance Σ share(t) × share(p) × d(t, p) with
the machine's distance table (10 = local). Domains are the finest memory partition known
(``numatop_llm.planner.machine``): on a machine with sub-NUMA clustering turned off a node is spread by
the memory controller over its former sub-NUMA domains, so a rank on it still sends ~3/4 of its
accesses to other quadrants of its socket, at the old 12.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from numatop_llm.planner.config import PlanConfig
from numatop_llm.planner.machine import Machine, as_is, restrict_cpus, visible_memory_nodes
from numatop_llm.planner.plan import Plan, RankPlan
from numatop_llm.probes.cpulist import format_cpulist, parse_cpulist
from numatop_llm.probes.models import Topology

ENV_VISIBLE = "CPU_VISIBLE_MEMORY_NODES"
_MEM_OPTS = {
    "--interleave": "interleave",
    "-i": "interleave",
    "--membind": "bind",
    "-m": "bind",
    "--preferred": "preferred",
    "-p": "preferred",
    "--preferred-many": "preferred-many",
    "-P": "preferred-many",
    "--weighted-interleave": "weighted-interleave",
    "-w": "weighted-interleave",
}
_CPU_OPTS = {"--cpunodebind": "nodes", "-N": "nodes", "--physcpubind": "cpus", "-C": "cpus"}
_FLAGS = {"--localalloc": "local", "-l": "local"}
_IGNORED_FLAGS = {"--all", "-a", "--balancing", "-b", "--strict", "-s", "--touch", "-t"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LaunchPolicy(_Frozen):
    """What the launch line asks of memory and CPUs: ``numactl`` options and ``CPU_VISIBLE_MEMORY_NODES``."""

    #: the numactl options as given (no program, no ``numactl`` word)
    numactl: tuple[str, ...] = ()
    #: ``default``, ``bind``, ``interleave``, ``preferred``, ``preferred-many``, ``weighted-interleave``, ``local``
    mem_mode: str = "default"
    mem_nodes: tuple[int, ...] = ()
    #: CPUs the process may run on (``--cpunodebind``/``--physcpubind``); empty = all
    cpus: tuple[int, ...] = ()
    cpu_words: str = ""
    #: CPU_VISIBLE_MEMORY_NODES in the order given; empty = unset
    visible_nodes: tuple[int, ...] = ()

    @property
    def is_default(self) -> bool:
        return self.mem_mode == "default" and not self.cpus and not self.visible_nodes

    def words(self) -> str:
        """numastat/numa_maps words, e.g. ``interleave:0-3``."""
        if self.mem_mode in ("default", "local"):
            return self.mem_mode
        return f"{self.mem_mode}:{format_cpulist(self.mem_nodes)}"

    def summary(self) -> str:
        parts = []
        if self.numactl:
            parts.append("numactl " + shlex.join(self.numactl))
        if self.visible_nodes:
            parts.append(f"{ENV_VISIBLE}={','.join(map(str, self.visible_nodes))}")
        return " ".join(parts) or "no numactl"

    def env(self) -> dict[str, str]:
        return {ENV_VISIBLE: ",".join(map(str, self.visible_nodes))} if self.visible_nodes else {}


def _nodes(text: str, topology: Topology, opt: str) -> tuple[int, ...]:
    t = text.strip()
    if t == "all":
        return tuple(sorted(n.id for n in topology.nodes if n.memory is not None and n.memory.total_bytes > 0))
    if not t or not all(ch.isdigit() or ch in ",-" for ch in t):
        raise ValueError(f"numactl {opt}: node list {text!r} not understood (want e.g. 0-3, 0,2 or all)")
    ids = tuple(parse_cpulist(t))
    known = set(topology.node_ids)
    bad = [n for n in ids if n not in known]
    if bad:
        raise ValueError(f"numactl {opt}: no node {format_cpulist(bad)} on this machine")
    return ids


def parse_launch(numactl: str | Sequence[str] | None, topology: Topology, visible: str | None = None) -> LaunchPolicy:
    """Parse numactl options (``--interleave=0-3 --cpunodebind=0``) and ``CPU_VISIBLE_MEMORY_NODES``;
    ValueError with one line on what numactl or vLLM would not accept."""
    args = shlex.split(numactl) if isinstance(numactl, str) else list(numactl or [])
    if args and args[0].endswith("numactl"):
        args = args[1:]
    mode: str = "default"
    mem_nodes: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()
    cpu_words = ""
    i = 0
    while i < len(args):
        a = args[i]
        val: str | None = None
        opt = a
        if a.startswith("--") and "=" in a:
            opt, val = a.split("=", 1)
        if opt in _FLAGS:
            mode, mem_nodes = _FLAGS[opt], ()
            i += 1
            continue
        if opt in _IGNORED_FLAGS:
            i += 1
            continue
        if opt not in _MEM_OPTS and opt not in _CPU_OPTS:
            if len(opt) > 2 and opt[:2] in _MEM_OPTS | _CPU_OPTS and not opt.startswith("--"):
                opt, val = opt[:2], opt[2:]
            else:
                raise ValueError(
                    f"numactl option {a!r} is not modelled (known: --interleave, --membind, --preferred, "
                    "--cpunodebind, --physcpubind, --localalloc)"
                )
        if val is None:
            if i + 1 >= len(args):
                raise ValueError(f"numactl {opt} needs a value")
            val = args[i + 1]
            i += 2
        else:
            i += 1
        if opt in _MEM_OPTS:
            mode, mem_nodes = _MEM_OPTS[opt], _nodes(val, topology, opt)
            if mode == "preferred" and len(mem_nodes) != 1:
                raise ValueError(f"numactl {opt} takes one node (got {val!r})")
        elif _CPU_OPTS[opt] == "nodes":
            nodes = _nodes(val, topology, opt)
            by_id = {nd.id: nd for nd in topology.nodes}
            cpus = tuple(sorted(c for n in nodes if n in by_id for c in by_id[n].cpus))
            cpu_words = f"--cpunodebind={format_cpulist(nodes)}"
        else:
            t = val.strip()
            if t == "all":
                cpus = tuple(sorted(topology.cpus_online))
            elif t and all(ch.isdigit() or ch in ",-" for ch in t):
                cpus = tuple(parse_cpulist(t))
            else:
                raise ValueError(f"numactl {opt}: CPU list {val!r} not understood")
            cpu_words = f"--physcpubind={format_cpulist(cpus)}"
    vis: tuple[int, ...] = ()
    if visible:
        try:
            vis = tuple(int(s) for s in visible.split(","))  # vLLM's own parsing: int() of each
        except ValueError:
            raise ValueError(f"{ENV_VISIBLE}={visible!r}: vLLM parses it with int() per comma-separated node") from None
        bad = [n for n in vis if n not in set(topology.node_ids)]
        if bad:
            raise ValueError(f"{ENV_VISIBLE}: no node {format_cpulist(bad)} on this machine")
    return LaunchPolicy(
        numactl=tuple(args), mem_mode=mode, mem_nodes=mem_nodes, cpus=cpus, cpu_words=cpu_words, visible_nodes=vis
    )


def topology_for_vllm(topology: Topology, launch: LaunchPolicy | None) -> tuple[Topology, list[str]]:
    """The topology vLLM's workers see under ``launch``: CPUs narrowed by numactl's CPU options, memory
    nodes narrowed by ``CPU_VISIBLE_MEMORY_NODES``."""
    notes: list[str] = []
    if launch is None:
        return topology, notes
    if launch.cpus:
        topology = restrict_cpus(topology, launch.cpus)
        notes.append(
            f"numactl {launch.cpu_words}: vLLM lists CPUs with sched_getaffinity, so its bind uses only "
            f"CPU(s) {format_cpulist(launch.cpus)}"
        )
    if launch.visible_nodes:
        topology = visible_memory_nodes(topology, launch.visible_nodes)
        if list(launch.visible_nodes) != sorted(launch.visible_nodes):
            notes.append(
                f"{ENV_VISIBLE}={','.join(map(str, launch.visible_nodes))}: vLLM keeps this order (rank i takes the "
                "i-th); the plan assumes ascending order"
            )
        notes.append(
            f"{ENV_VISIBLE}={','.join(map(str, launch.visible_nodes))}: vLLM binds workers only to these nodes "
            "(auto: rank i on the i-th)"
        )
    return topology, notes


def interleave_pages(n_pages: int, nodes: Sequence[int], first_index: int = 0) -> dict[int, int]:
    """Pages per node when ``n_pages`` consecutive pages starting at interleave index ``first_index``
    (the mapping's ``vm_pgoff`` + page offset; for anonymous memory its virtual page number) are
    interleaved over ``nodes``: page k goes to ``sorted(nodes)[(first_index + k) % len(nodes)]``."""
    order = sorted(nodes)
    n = len(order)
    if not n or n_pages <= 0:
        return {}
    base, extra = divmod(n_pages, n)
    out = {node: base for node in order}
    start = first_index % n
    for k in range(extra):
        out[order[(start + k) % n]] += 1
    return out


class RankTraffic(_Frozen):
    """One rank: where its threads run and its pages are (by memory domain), and the remote share."""

    rank: int
    label: str
    #: the policy its pages are placed under, numa_maps words (``bind:0``, ``interleave:0-3``)
    policy: str
    #: True when vLLM replaces the launcher's memory policy in this worker
    overridden: bool = False
    threads: dict[int, float] = Field(default_factory=dict)
    pages: dict[int, float] = Field(default_factory=dict)
    remote_share: float = 0.0
    avg_distance: float = 10.0


class Placement(_Frozen):
    """A plan's page placement and its cost on a machine, under a launch policy."""

    machine: str
    launch: str
    ranks: tuple[RankTraffic, ...] = ()
    findings: tuple[str, ...] = ()
    #: ``oom`` when a launcher's strict membind that vLLM keeps cannot hold the ranks (the plan's own
    #: first-touch verdict does not know about it); None otherwise
    verdict: str | None = None

    @property
    def mean_remote_share(self) -> float:
        return sum(r.remote_share for r in self.ranks) / len(self.ranks) if self.ranks else 0.0

    @property
    def worst_remote_share(self) -> float:
        return max((r.remote_share for r in self.ranks), default=0.0)

    @property
    def mean_distance(self) -> float:
        return sum(r.avg_distance for r in self.ranks) / len(self.ranks) if self.ranks else 10.0

    def headline(self) -> str:
        """``75% of memory traffic remote (avg distance 11.5)``."""
        if not self.ranks:
            return "nothing placed: vLLM would not start this configuration"
        return (
            f"{self.mean_remote_share:.0%} of memory traffic remote (worst rank {self.worst_remote_share:.0%}), "
            f"average distance {self.mean_distance:.1f} (10 = local)"
        )

    def to_json(self) -> dict:
        return {
            "machine": self.machine,
            "launch": self.launch,
            "remote_share": round(self.mean_remote_share, 4),
            "worst_remote_share": round(self.worst_remote_share, 4),
            "avg_distance": round(self.mean_distance, 3),
            "ranks": [
                {
                    "rank": r.rank,
                    "label": r.label,
                    "policy": r.policy,
                    "overridden_by_vllm": r.overridden,
                    "remote_share": round(r.remote_share, 4),
                    "avg_distance": round(r.avg_distance, 3),
                    "threads_by_domain": {str(k): round(v, 4) for k, v in sorted(r.threads.items())},
                    "pages_by_domain": {str(k): round(v, 4) for k, v in sorted(r.pages.items())},
                }
                for r in self.ranks
            ],
            "findings": list(self.findings),
        }


def traffic(
    threads: dict[int, float], pages: dict[int, float], distances: dict[int, dict[int, int]]
) -> tuple[float, float]:
    """(remote share, average distance) of uniform accesses by ``threads`` to ``pages`` (shares by domain)."""
    tw = sum(threads.values()) or 1.0
    pw = sum(pages.values()) or 1.0
    remote = 0.0
    dist = 0.0
    for t, wt in threads.items():
        for p, wp in pages.items():
            share = (wt / tw) * (wp / pw)
            if t != p:
                remote += share
            dist += share * (distances.get(t, {}).get(p) or (10 if t == p else 20))
    return remote, dist


def vllm_overrides(config: PlanConfig, launch: LaunchPolicy | None) -> bool:
    """True when vLLM sets its own memory policy in every worker, replacing the launcher's."""
    if launch is None or launch.mem_mode == "default":
        return False
    return config.modern or config.bind.strip() not in ("nobind", "all")


def _nearest(home: int | None, nodes: Iterable[int], distances: dict[int, dict[int, int]]) -> int | None:
    nodes = list(nodes)
    if not nodes:
        return None
    if home is None:
        return min(nodes)
    return min(nodes, key=lambda n: (distances.get(home, {}).get(n, 255), n))


def _rank_pages(
    r: RankPlan, plan: Plan, launch: LaunchPolicy | None, topo: Topology
) -> tuple[dict[int, float], str, bool]:
    """(bytes share per node of the planned machine, policy words, overridden by vLLM)."""
    dist = {n.id: dict(n.distances) for n in topo.nodes}
    overridden = vllm_overrides(plan.config, launch)
    honoured = launch is not None and launch.mem_mode != "default" and not overridden
    if honoured:
        assert launch is not None
        mode, nodes = launch.mem_mode, list(launch.mem_nodes)
        if mode in ("interleave", "weighted-interleave"):
            return {n: 1.0 / len(nodes) for n in nodes}, launch.words(), False
        if mode == "local":
            return ({r.node: 1.0} if r.node is not None else {}), "local", False
        near = _nearest(r.node, nodes, dist)
        return ({near: 1.0} if near is not None else {}), launch.words(), False
    if r.node is None:
        return {}, "default", overridden
    if r.strict_bind or r.remote_bytes <= 0:
        return {r.node: 1.0}, (f"bind:{r.node}" if r.strict_bind else "default"), overridden
    # first touch (no bind): the local part, the spill on the nearest other node
    need = max(1, r.need_bytes)
    other = _nearest(r.node, [n.id for n in topo.nodes if n.id != r.node and n.memory is not None], dist)
    out = {r.node: (need - r.remote_bytes) / need}
    if other is not None:
        out[other] = r.remote_bytes / need
    return out, "default", overridden


def _node_loads(plan: Plan, launch: LaunchPolicy, topo: Topology) -> list[str]:
    """Under a launcher's policy that vLLM keeps: what each node must hold for all ranks together."""
    load: dict[int, float] = {}
    for r in plan.ranks:
        pages, _, _ = _rank_pages(r, plan, launch, topo)
        for n, share in pages.items():
            load[n] = load.get(n, 0.0) + share * r.need_bytes
    out = []
    for n, need in sorted(load.items()):
        node = topo.node(n)
        avail = node.memory.vllm_available_bytes if node is not None and node.memory is not None else 0
        if need > avail:
            strict = launch.mem_mode == "bind"
            out.append(
                f"node {n} would hold {need / 2**30:.1f} GiB of the workers' pages but has {avail / 2**30:.1f} GiB "
                + (
                    "available: membind is strict, the kernel OOM-kills (-9)"
                    if strict
                    else "available: the kernel falls back to the nearest other nodes (interleave/preferred are not "
                    "strict)"
                )
            )
    return out


def place(plan: Plan, machine: Machine | None = None, launch: LaunchPolicy | None = None) -> Placement:
    """Where each rank of ``plan`` (planned on ``machine.topology``) has its threads and pages, and the cost."""
    machine = machine or as_is(Topology())
    topo = machine.topology
    ranks: list[RankTraffic] = []
    findings: list[str] = []
    verdict: str | None = None
    online = list(topo.cpus_online) or [c.id for c in topo.cpus if c.online]
    for r in plan.ranks:
        cpus = list(r.cpus) or online
        threads: dict[int, float] = {}
        for c in cpus:
            d = machine.cpu_domain.get(c)
            if d is not None:
                threads[d] = threads.get(d, 0.0) + 1.0
        node_pages, words, overridden = _rank_pages(r, plan, launch, topo)
        if not node_pages:
            continue  # no node: vLLM refuses the layout, nothing is placed
        pages: dict[int, float] = {}
        for node, share in node_pages.items():
            for dom, part in machine.node_domains.get(node, {node: 1.0}).items():
                pages[dom] = pages.get(dom, 0.0) + share * part
        remote, avg = traffic(threads, pages, machine.domain_distances)
        ranks.append(
            RankTraffic(
                rank=r.rank,
                label=r.label,
                policy=words,
                overridden=overridden,
                threads={k: v / max(1, len(cpus)) for k, v in threads.items()},
                pages=pages,
                remote_share=remote,
                avg_distance=avg,
            )
        )
    if launch is not None and launch.mem_mode != "default":
        if vllm_overrides(plan.config, launch):
            why = (
                "every worker calls init_cpu_memory_env([node]): numa_migrate_pages to its node, then a strict "
                "numa_set_membind"
                if plan.config.modern
                else "releases before the node checks bind memory with the threads"
            )
            findings.append(
                f"vLLM {plan.config.version} overrides numactl {launch.words()} in its workers ({why}); only the API "
                "server and the engine core keep it. The workers' weights and KV stay on their own node."
            )
        else:
            findings.append(
                f"vLLM {plan.config.version} with bind={plan.config.bind} sets no memory policy of its own: "
                f"numactl {launch.words()} places the workers' pages"
            )
            loads = _node_loads(plan, launch, topo)
            findings.extend(loads)
            if any("OOM-kills" in f for f in loads):
                verdict = "oom"
    for rt in ranks:
        if any(d not in rt.threads for d in rt.pages) or len(rt.pages) > 1:
            far = [d for d in rt.pages if d not in rt.threads]
            where = f" (domains {format_cpulist(far)} hold pages but run none of its threads)" if far else ""
            findings.append(
                f"{rt.label}: {rt.remote_share:.0%} of its memory traffic is remote, average distance "
                f"{rt.avg_distance:.1f}{where}"
            )
    if machine.is_whatif:
        merged = [n for n, doms in machine.node_domains.items() if len(doms) > 1]
        if merged and any(r.remote_share > 0 for r in ranks):
            findings.append(
                f"on this machine node(s) {format_cpulist(merged)} are interleaved by the memory controller over "
                "today's sub-NUMA domains: the kernel calls every access local, but most cross the socket's mesh"
            )
    return Placement(
        machine=machine.label,
        launch=launch.summary() if launch else "no numactl",
        ranks=tuple(ranks),
        findings=tuple(findings),
        verdict=verdict,
    )


#: points a plan loses in the solver's score per unit of remote share, and per unit of average distance
#: above local (distance / 10 − 1): a plan 75% remote at 12 loses 15 + 6 = 21, one whose threads span
#: two sockets (88% remote, distance 16.2) loses 17.6 + 24.8 = 42 — more than the extra cores bring
REMOTE_PENALTY = 20.0
DISTANCE_PENALTY = 40.0


def cost_score(score: float, placement: Placement) -> float:
    """The solver's score less the remote-traffic cost (see ``REMOTE_PENALTY``, ``DISTANCE_PENALTY``)."""
    excess = max(0.0, placement.mean_distance / 10.0 - 1.0)
    return score - REMOTE_PENALTY * placement.mean_remote_share - DISTANCE_PENALTY * excess
