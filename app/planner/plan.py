"""The plan: per rank, what lands on which node, and whether the node holds it.

Memory rules of vLLM 0.32 (``v1/worker/cpu_worker.py``, ``utils/cpu_resource_utils.py``,
``v1/core/kv_cache_utils.py``), per worker, with its memory strictly bound to one node:

1. start-up, ``VLLM_CPU_KVCACHE_SPACE`` unset: requested = ceil(node MemTotal × gpu_memory_utilization);
   requested > node available (MemFree + file LRU + SReclaimable) → ValueError.
2. weights load: the kernel OOM-kills (-9) a worker whose weights + runtime do not fit the node.
3. KV: explicit KV > what the node still has → ValueError; unset → KV = requested − RSS, which
   must be > 0 and fit what the node still has, else ValueError.
4. the KV cache must hold one ``max_model_len`` sequence (blocks of 128 tokens, one block held
   back), else ValueError.

Releases before the node checks (the seed story ran 0.8): KV 4 GiB when unset, no check: a worker
over its node's budget is OOM-killed (-9); ``nobind`` binds no memory, so pages land by first
touch and spill to the nearest nodes.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from numatop_llm.planner.bind import Layout, layout, memory_nodes
from numatop_llm.planner.config import PlanConfig
from numatop_llm.planner.model import TORCH_DTYPE_BYTES, ModelSpec
from numatop_llm.planner.overhead import rank_overhead
from numatop_llm.planner.shard import (
    divisibility_errors,
    kv_bytes_per_token,
    rank_weight_bytes,
    runtime_dtype,
)
from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import Engine, Topology
from numatop_llm.units import GIB, gib

BLOCK_SIZE = 128
#: KV cache when VLLM_CPU_KVCACHE_SPACE is unset (or 0) in releases before the node checks
LEGACY_DEFAULT_KV_BYTES = 4 * GIB
#: a fit with less spare than this (and 3% of the node) counts as "no margin" for the solver
MARGIN_MIN_BYTES = GIB // 2

Verdict = Literal["fits", "oom", "spills", "error"]
_SEVERITY = {"fits": 0, "spills": 1, "oom": 2, "error": 3}


def _format_gib(b: int | float) -> str:
    """vLLM's ``format_gib``: GiB rounded to 2 places, Python's float repr."""
    return f"{round(b / GIB, 2)}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RankPlan(_Frozen):
    """One rank's predicted placement and its verdict."""

    rank: int
    tp_rank: int
    pp_rank: int
    #: vLLM's process title without ``VLLM::`` (``Worker_TP1``)
    label: str
    #: the node its memory is bound to (or, unbound, where it first touches), None when unknown
    node: int | None
    cpus: tuple[int, ...] = ()
    #: nodes its threads may run on
    cpu_nodes: tuple[int, ...] = ()
    weights_bytes: int = 0
    kv_bytes: int = 0
    overhead_bytes: int = 0
    need_bytes: int = 0
    #: what the node can give this rank: its available memory less what ranks sharing it need
    node_budget_bytes: int = 0
    #: the node's whole available memory (MemFree + file LRU + SReclaimable)
    node_available_bytes: int = 0
    node_total_bytes: int = 0
    verdict: Verdict = "fits"
    #: bytes expected on other nodes than ``node`` (first-touch spill)
    remote_bytes: int = 0
    #: the largest KV cache this rank could have on its node with everything else unchanged
    max_kv_bytes: int = 0
    #: tokens its KV cache holds (whole blocks of 128)
    kv_tokens: int = 0
    kv_bytes_per_token: int = 0
    #: True when vLLM sizes the KV itself (VLLM_CPU_KVCACHE_SPACE unset)
    kv_auto: bool = False
    strict_bind: bool = True
    shares_node_with: tuple[int, ...] = ()
    #: one line: why this verdict
    reason: str = ""

    @property
    def headroom_bytes(self) -> int:
        return self.node_budget_bytes - self.need_bytes

    @property
    def max_kv_gib(self) -> int:
        """The largest whole VLLM_CPU_KVCACHE_SPACE (GiB) that fits."""
        return max(0, self.max_kv_bytes // GIB)


class Plan(_Frozen):
    """A configuration's prediction: per rank, the verdict, findings in plain words, vLLM's errors."""

    config: PlanConfig
    model: str
    ranks: tuple[RankPlan, ...] = ()
    verdict: Verdict = "fits"
    findings: tuple[str, ...] = ()
    #: what vLLM itself would raise (same wording), or the planner's own check (said so)
    errors: tuple[str, ...] = ()
    #: tokens the engine's KV cache holds (the smallest rank's blocks × 128)
    kv_tokens: int = 0
    max_model_len: int | None = None
    #: OpenMP threads of all ranks (CPUs they are pinned to; all online CPUs each when unbound)
    usable_cpus: int = 0
    reserved_cpus: tuple[int, ...] = ()
    #: how many TP groups span more than one socket, and the largest node distance inside a TP group
    cross_socket_groups: int = 0
    max_tp_distance: int = 0
    vllm_version: str = ""

    @property
    def fits(self) -> bool:
        return self.verdict == "fits"

    @property
    def min_headroom_bytes(self) -> int:
        return min((r.headroom_bytes for r in self.ranks), default=0)

    def to_json(self, detail: bool = False) -> dict:
        """``{"ranks": [{"rank", "node", "cpus", "weights_bytes", "kv_bytes", "overhead_bytes",
        "node_budget_bytes", "verdict"}], "verdict", "findings"}``, as ``numatop-llm plan --json`` prints it.

        vLLM's errors lead the findings (``error: ...``). ``detail`` adds the rest (need, max KV,
        tokens, labels, env and flags).
        """
        ranks = []
        for r in self.ranks:
            row = {
                "rank": r.rank,
                "node": r.node,
                "cpus": format_cpulist(r.cpus) if r.cpus else "",
                "weights_bytes": r.weights_bytes,
                "kv_bytes": r.kv_bytes,
                "overhead_bytes": r.overhead_bytes,
                "node_budget_bytes": r.node_budget_bytes,
                "verdict": r.verdict,
            }
            if detail:
                row.update(
                    label=r.label,
                    need_bytes=r.need_bytes,
                    max_kv_bytes=r.max_kv_bytes,
                    kv_tokens=r.kv_tokens,
                    remote_bytes=r.remote_bytes,
                    shares_node_with=list(r.shares_node_with),
                    kv_auto=r.kv_auto,
                )
            ranks.append(row)
        out: dict = {
            "ranks": ranks,
            "verdict": self.verdict,
            "findings": [f"error: {e}" for e in self.errors] + list(self.findings),
        }
        if detail:
            out.update(
                model=self.model,
                config=self.config.summary(),
                errors=list(self.errors),
                kv_tokens=self.kv_tokens,
                usable_cpus=self.usable_cpus,
                env=self.config.env(),
                args=self.config.args(),
            )
        return out


def worker_label(tp: int, pp: int, tp_rank: int, pp_rank: int) -> str:
    if tp > 1 and pp > 1:
        return f"Worker_PP{pp_rank}_TP{tp_rank}"
    if tp > 1:
        return f"Worker_TP{tp_rank}"
    if pp > 1:
        return f"Worker_PP{pp_rank}"
    return "Worker"


class _Memory:
    """Node budgets as vLLM 0.32 reads them, clamped by a cgroup memory limit, with a running engine counted back."""

    def __init__(
        self, topology: Topology, engine: Engine | None, limit: int | None = None, usage: int | None = None
    ) -> None:
        self.topology = topology
        self.engine = engine
        if engine is not None and limit is None:
            root = next((p for p in engine.processes if p.pid == engine.root_pid), None)
            cg = root.cgroup if root is not None else None
            if cg is not None and cg.memory_max is not None:
                limit, usage = cg.memory_max, cg.memory_current
        self.limit = limit
        self.usage = usage or 0
        #: the running engine's workers: freed by a relaunch
        self.engine_rss = sum(w.rss_bytes for w in engine.workers()) if engine is not None else 0

    @property
    def cgroup_left(self) -> int | None:
        if self.limit is None:
            return None
        return max(0, self.limit - self.usage + self.engine_rss)

    def node(self, node: int | None) -> tuple[int, int]:
        """(available, total) bytes of a node; the engine's own resident bytes there count as available."""
        if node is None:
            return 0, 0
        n = self.topology.node(node)
        if n is None or n.memory is None:
            return 0, 0
        avail = n.memory.vllm_available_bytes
        total = n.memory.total_bytes
        if self.engine is not None:
            for w in self.engine.workers():
                avail += w.node_bytes.get(node, 0)
        avail = min(avail, total)
        left = self.cgroup_left
        if self.limit is not None and left is not None and self.limit < total:
            total = self.limit
            avail = max(0, min(avail, left))
        return avail, total


def _node_package(topology: Topology, node: int) -> int | None:
    n = topology.node(node)
    if n is None:
        return None
    if n.package is not None:
        return n.package
    pk = {c.package for c in topology.cpus if c.node == node and c.package is not None}
    return min(pk) if pk else None


class _R:
    """Mutable working state of one rank while planning."""

    def __init__(self, rank: int, tp: int, pp: int) -> None:
        self.rank = rank
        self.tp_rank = rank % tp
        self.pp_rank = rank // tp
        self.label = worker_label(tp, pp, self.tp_rank, self.pp_rank)
        self.node: int | None = None
        self.cpus: tuple[int, ...] = ()
        self.weights = 0
        self.overhead = 0
        self.kv = 0
        self.kv_auto = False
        self.per_token = 0
        self.verdict: Verdict = "fits"
        self.reason = ""
        self.budget = 0
        self.avail = 0
        self.total = 0
        self.remote = 0
        self.max_kv = 0
        self.shares: tuple[int, ...] = ()
        self.strict = True

    @property
    def base(self) -> int:
        return self.weights + self.overhead

    @property
    def need(self) -> int:
        return self.weights + self.overhead + self.kv


def _kv_setting(config: PlanConfig, errors: list[str]) -> int | None:
    """Explicit KV bytes per rank, None when unset; a value vLLM cannot parse becomes an error."""
    if config.kv_gib is None:
        return None
    if config.kv_gib < 0 or not float(config.kv_gib).is_integer():
        text = f"{config.kv_gib:g}"
        errors.append(
            f"ValueError: invalid literal for int() with base 10: '{text}' "
            f"(VLLM_CPU_KVCACHE_SPACE must be a whole number of GiB)"
            if not float(config.kv_gib).is_integer()
            else f"VLLM_CPU_KVCACHE_SPACE={text}: a negative KV cache size (the planner's check)"
        )
        return max(0, int(config.kv_gib * GIB))
    return int(config.kv_gib) * GIB


def make_plan(
    model: ModelSpec,
    topology: Topology,
    config: PlanConfig,
    *,
    engine: Engine | None = None,
    memory_limit_bytes: int | None = None,
    memory_usage_bytes: int | None = None,
) -> Plan:
    """Predict ``config`` for ``model`` on ``topology``; never raises for a bad configuration.

    ``engine``: when planning for a running engine on a live topology, its workers' resident
    bytes are counted back into their nodes' available memory (a relaunch frees them), and its
    cgroup's memory limit applies. ``memory_limit_bytes``/``memory_usage_bytes``: a cgroup limit
    and its current usage to plan under (vLLM 0.32 clamps each node's total and available by it).
    """
    errors: list[str] = []
    findings: list[str] = []
    tp, pp = config.tp, config.pp
    modern = config.modern
    if tp < 1 or pp < 1:
        errors.append(f"tensor/pipeline parallel sizes must be ≥ 1 (got TP={tp}, PP={pp})")
        return Plan(config=config, model=model.name, verdict="error", errors=tuple(errors))
    lws = tp * pp
    if not topology.nodes:
        errors.append("the topology has no NUMA node (sysfs not readable?)")
    divisible = divisibility_errors(model, tp, pp)
    errors.extend(divisible)
    rt = runtime_dtype(model, config.dtype)
    if rt not in TORCH_DTYPE_BYTES:
        errors.append(f"ValueError: Unknown dtype: {config.dtype!r}")
        rt = model.dtype
    dtype_bytes = TORCH_DTYPE_BYTES[rt]
    explicit_kv = _kv_setting(config, errors)
    lay: Layout = layout(topology, config.bind, lws, config.reserved_cpus, modern)
    errors.extend(lay.errors)
    findings.extend(lay.warnings)
    cpu_node = topology.cpu_to_node()
    gmu = config.gpu_memory_utilization
    if not 0 < gmu <= 1:
        errors.append(f"ValueError: gpu_memory_utilization must be in (0, 1], got {gmu:g}")
    max_len = config.max_model_len or model.max_position_embeddings
    if max_len is None:
        max_len = 2048

    ranks = [_R(i, tp, pp) for i in range(lws)]
    layout_ok = len(lay.cpus) == lws
    observed = _observed_binds(engine, config)
    for r in ranks:
        if not divisible:
            r.weights = rank_weight_bytes(model, tp, pp, r.pp_rank, rt)
            r.per_token = kv_bytes_per_token(model, tp, pp, r.pp_rank, rt)
        r.overhead = rank_overhead(
            model, tp, pp, dtype_bytes, config.max_num_seqs, config.max_num_batched_tokens, max_len
        ).total
        if layout_ok:
            r.cpus = lay.cpus[r.rank]
            r.node = lay.mem_nodes[r.rank]
        if layout_ok and r.rank in observed and observed[r.rank] != r.node:
            findings.append(
                f"{r.label}: numa_maps shows bind:{observed[r.rank]} where vLLM's rule gives node {r.node}; "
                f"planning with the observed node {observed[r.rank]}"
            )
            r.node = observed[r.rank]
        r.strict = r.node is not None and (modern or lay.pinned)
        if explicit_kv is not None:
            if explicit_kv == 0 and not modern:
                r.kv = LEGACY_DEFAULT_KV_BYTES
            else:
                r.kv = explicit_kv
        elif not modern:
            r.kv = LEGACY_DEFAULT_KV_BYTES
        else:
            r.kv_auto = True

    rank_errors: list[str] = []
    mem = _Memory(topology, engine, memory_limit_bytes, memory_usage_bytes)
    if layout_ok:
        if all(r.strict for r in ranks):
            _strict(config, ranks, mem, modern, rank_errors, findings)
        else:
            _first_touch(topology, ranks, mem, findings)
        _cgroup_check(ranks, mem, findings)
    else:
        for r in ranks:
            r.verdict = "error"
            r.reason = "no CPU layout: vLLM refuses this bind setting"
            if r.kv_auto:
                r.kv = 0
    errors.extend(rank_errors)

    # engine-wide KV tokens and the one-sequence check (only when every worker got this far)
    blocks = [r.kv // (BLOCK_SIZE * r.per_token) if r.per_token else 0 for r in ranks]
    num_blocks = min(blocks) if blocks else 0
    engine_tokens = num_blocks * BLOCK_SIZE
    if not errors and all(r.verdict in ("fits", "spills") for r in ranks) and ranks and ranks[0].per_token:
        seq_err = _one_sequence_error(ranks, blocks, max_len, modern)
        if seq_err:
            errors.append(seq_err)

    plan_ranks = []
    for r, b in zip(ranks, blocks, strict=True):
        plan_ranks.append(
            RankPlan(
                rank=r.rank,
                tp_rank=r.tp_rank,
                pp_rank=r.pp_rank,
                label=r.label,
                node=r.node,
                cpus=r.cpus,
                cpu_nodes=tuple(sorted({cpu_node[c] for c in r.cpus if c in cpu_node})),
                weights_bytes=r.weights,
                kv_bytes=r.kv,
                overhead_bytes=r.overhead,
                need_bytes=r.need,
                node_budget_bytes=r.budget,
                node_available_bytes=r.avail,
                node_total_bytes=r.total,
                verdict=r.verdict,
                remote_bytes=r.remote,
                max_kv_bytes=r.max_kv,
                kv_tokens=b * BLOCK_SIZE,
                kv_bytes_per_token=r.per_token,
                kv_auto=r.kv_auto,
                strict_bind=r.strict,
                shares_node_with=r.shares,
                reason=r.reason,
            )
        )
    if errors:
        verdict: Verdict = "error"
    else:
        verdict = max((r.verdict for r in plan_ranks), key=lambda v: _SEVERITY[v], default="error")

    cross, max_dist = _tp_spread(topology, plan_ranks, tp, pp)
    findings = _findings(model, topology, config, plan_ranks, lay, findings, engine_tokens, max_len, cross, max_dist)
    usable = sum(len(r.cpus) for r in plan_ranks) if lay.pinned else len(topology.cpus_online or ())
    return Plan(
        config=config,
        model=model.name,
        ranks=tuple(plan_ranks),
        verdict=verdict,
        findings=tuple(findings),
        errors=tuple(dict.fromkeys(errors)),
        kv_tokens=engine_tokens,
        max_model_len=max_len,
        usable_cpus=usable,
        reserved_cpus=lay.reserved,
        cross_socket_groups=cross,
        max_tp_distance=max_dist,
        vllm_version=config.version,
    )


def _observed_binds(engine: Engine | None, config: PlanConfig) -> dict[int, int]:
    """{rank: node} of the running engine's workers strictly bound to one node, when ``config`` is the
    engine's own layout (what vLLM really did beats the rule: vLLM PR #50525 reports every TP rank
    binding to one node)."""
    if engine is None:
        return {}
    ec = engine.config
    same = (
        ec.tensor_parallel_size == config.tp
        and ec.pipeline_parallel_size == config.pp
        and (ec.omp_threads_bind or "auto") == config.bind
    )
    if not same:
        return {}
    return {
        w.rank: w.policy.nodes[0]
        for w in engine.workers()
        if w.rank is not None and w.policy.mode == "bind" and len(w.policy.nodes) == 1
    }


def _strict(
    config: PlanConfig,
    ranks: list[_R],
    mem: _Memory,
    modern: bool,
    errors: list[str],
    findings: list[str],
) -> None:
    """Every rank strictly bound to one node: the node must hold all ranks bound to it."""
    by_node: dict[int | None, list[_R]] = {}
    for r in ranks:
        by_node.setdefault(r.node, []).append(r)
    gmu = config.gpu_memory_utilization
    for node, group in by_node.items():
        avail, total = mem.node(node)
        requested = math.ceil(total * gmu)
        ids = tuple(r.rank for r in group)
        for r in group:
            r.avail, r.total = avail, total
            r.shares = tuple(i for i in ids if i != r.rank)
        if total == 0:
            for r in group:
                r.verdict = "error"
                r.reason = f"node {node}'s memory is unknown (no meminfo)"
            errors.append(f"node {node}: no memory figures (meminfo missing), cannot plan (the planner's check)")
            continue
        load_sum = sum(r.base for r in group)
        avail_at_kv = avail - load_sum
        # what vLLM sizes (auto) or is given (explicit); checks in the order the worker meets them
        for r in group:
            if r.kv_auto:
                r.kv = max(0, requested - r.base)
        for r in group:
            if modern and r.kv_auto and requested > avail:
                r.verdict = "error"
                r.reason = "vLLM refuses to start: node has less available than --gpu-memory-utilization asks"
                errors.append(
                    f"ValueError: Available memory on node {node} ({_format_gib(avail)}/{_format_gib(total)} GiB) "
                    f"on startup is less than desired CPU memory utilization ({gmu:g}, {_format_gib(requested)} GiB). "
                    "On the CPU backend, the `--gpu-memory-utilization` flag controls the fraction of CPU memory "
                    "reserved (despite its name). To resolve: decrease `--gpu-memory-utilization` "
                    "(e.g. `--gpu-memory-utilization 0.5`) or reduce CPU memory used by other processes."
                )
        if any(r.verdict == "error" for r in group):
            _budgets(group, avail)
            continue
        if load_sum > avail:
            for r in group:
                r.verdict = "oom"
                r.reason = (
                    f"weights {gib(r.weights)} + runtime {gib(r.overhead)}"
                    + (f" (with {len(group) - 1} other rank(s) on the node)" if len(group) > 1 else "")
                    + f" exceed node {node}'s {gib(avail)}: killed (-9) while loading weights"
                )
            _budgets(group, avail)
            continue
        for r in group:
            if not modern:
                continue
            if r.kv_auto:
                want = requested - r.base
                if want <= 0 or want > avail_at_kv:
                    r.verdict = "error"
                    r.reason = "vLLM's automatic KV size does not fit what the node has left"
                    errors.append(
                        f"ValueError: Available memory on node {node} ({_format_gib(avail_at_kv)}/"
                        f"{_format_gib(total)} GiB) on kv cache allocation is less than requested memory for kv "
                        f"({_format_gib(want)}/{_format_gib(requested)} GiB). "
                        "Reduce CPU memory used by other processes."
                    )
            elif r.kv > avail_at_kv:
                r.verdict = "error"
                r.reason = f"KV {gib(r.kv)} > the {gib(avail_at_kv)} node {node} has left after the weights"
                errors.append(
                    f"ValueError: Available memory on node {node} ({_format_gib(avail_at_kv)}/{_format_gib(total)} "
                    f"GiB) on kv cache allocation is less than requested memory for kv ({_format_gib(r.kv)} GiB). "
                    "Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by "
                    "other processes."
                )
        need_sum = sum(r.need for r in group if r.verdict != "error")
        if need_sum > avail:
            for r in group:
                if r.verdict == "fits":
                    r.verdict = "oom"
                    r.reason = (
                        f"weights {gib(r.weights)} + KV {gib(r.kv)} + runtime {gib(r.overhead)}"
                        + (" (and the other ranks on the node)" if len(group) > 1 else "")
                        + f" > node {node}'s {gib(avail)}: killed (-9)"
                    )
        for r in group:
            if r.verdict == "fits":
                r.reason = f"{gib(r.need)} of node {node}'s {gib(avail)}"
        _budgets(group, avail)


def _budgets(group: list[_R], avail: int) -> None:
    for r in group:
        others = sum(o.need for o in group if o is not r)
        r.budget = avail - others
        r.max_kv = max(0, r.budget - r.base)


def _cgroup_check(ranks: list[_R], mem: _Memory, findings: list[str]) -> None:
    """All ranks share the engine's cgroup: together they must fit its memory limit."""
    left = mem.cgroup_left
    if left is None:
        return
    total_need = sum(r.need for r in ranks if r.verdict != "error")
    if total_need <= left:
        return
    for r in ranks:
        if r.verdict in ("fits", "spills"):
            r.verdict = "oom"
            r.reason = f"the ranks need {gib(total_need)} together; the cgroup limit leaves {gib(left)}"
    findings.append(
        f"the workers need {gib(total_need)} together but the cgroup memory limit ({gib(mem.limit or 0)}) leaves "
        f"{gib(left)}: the kernel OOM-kills a worker (-9, constraint memcg)"
    )


def _first_touch(topology: Topology, ranks: list[_R], mem: _Memory, findings: list[str]) -> None:
    """No memory bind: each rank's pages land on its home node first, then on the nearest nodes."""
    allowed = memory_nodes(topology)
    left = {n: mem.node(n)[0] for n in allowed}
    for r in ranks:
        r.strict = False
        if not allowed:
            r.verdict = "error"
            continue
        home = r.node if r.node in left else allowed[r.rank % len(allowed)]
        r.node = home
        r.avail, r.total = mem.node(home)
        r.budget = left[home]
        r.max_kv = max(0, sum(left.values()) - r.base)
        if r.kv_auto:  # modern releases always bind; kept for completeness
            r.kv = 0
        need = r.need
        local = min(need, left[home])
        left[home] -= local
        rest = need - local
        dist = (topology.node(home).distances if topology.node(home) else {}) or {}
        for n in sorted((n for n in allowed if n != home), key=lambda n: (dist.get(n, 255), n)):
            if rest <= 0:
                break
            take = min(rest, left[n])
            left[n] -= take
            rest -= take
        r.remote = need - local - rest
        if rest > 0:
            r.verdict = "oom"
            r.reason = f"the machine's nodes cannot hold {gib(need)} more: global OOM kill"
        elif r.remote > 0:
            r.verdict = "spills"
            r.reason = f"{gib(r.remote)} of {gib(need)} lands on other nodes than node {home} (first touch)"
        else:
            r.reason = f"fits on node {home} by first touch (not guaranteed: memory is not bound)"
    findings.append(
        "memory is not bound (nobind on this vLLM release): each worker's pages go where its threads first "
        "touch them; the planner assumes rank i starts on the i-th node and spills to the nearest nodes"
    )


def _one_sequence_error(ranks: list[_R], blocks: list[int], max_len: int, modern: bool) -> str | None:
    """vLLM's check that the KV cache holds one ``max_model_len`` sequence (None when it does)."""
    i = min(range(len(ranks)), key=lambda k: blocks[k])
    r = ranks[i]
    block_bytes = BLOCK_SIZE * r.per_token
    need_blocks = -(-max_len // BLOCK_SIZE)
    usable_blocks = blocks[i] - 1  # BlockPool keeps one null block
    if usable_blocks >= need_blocks:
        return None
    if not modern:
        return (
            f"ValueError: The model's max seq len ({max_len}) is larger than the maximum number of tokens that can "
            f"be stored in KV cache ({max(0, blocks[i]) * BLOCK_SIZE}). Try increasing `VLLM_CPU_KVCACHE_SPACE` "
            "or decreasing `max_model_len` when initializing the engine."
        )
    available = r.kv - block_bytes
    if available <= 0:
        return (
            "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
            "initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite "
            "its name). See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
        )
    needed = need_blocks * block_bytes
    est = (available // block_bytes) * BLOCK_SIZE
    est_msg = f"Based on the available memory, the estimated maximum model length is {est}. " if est > 0 else ""
    return (
        f"ValueError: To serve at least one request with the model's max seq len ({max_len}), "
        f"({_format_gib(needed)} GiB KV cache is needed, which is larger than the available KV cache memory "
        f"({_format_gib(available)} GiB). {est_msg}Try increasing `gpu_memory_utilization` (which also controls "
        "CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the engine. "
        "See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details."
    )


def _tp_spread(topology: Topology, ranks: list[RankPlan], tp: int, pp: int) -> tuple[int, int]:
    """(TP groups spanning more than one socket, largest node distance inside a TP group)."""
    cross = 0
    worst = 0
    for stage in range(pp):
        nodes = sorted({r.node for r in ranks if r.pp_rank == stage and r.node is not None})
        if not nodes:
            continue
        pkgs = {_node_package(topology, n) for n in nodes}
        pkgs.discard(None)
        if len(pkgs) > 1:
            cross += 1
        for a in nodes:
            na = topology.node(a)
            for b in nodes:
                if na is not None and a != b:
                    worst = max(worst, na.distances.get(b, 0))
    return cross, worst


def _findings(
    model: ModelSpec,
    topology: Topology,
    config: PlanConfig,
    ranks: list[RankPlan],
    lay: Layout,
    early: list[str],
    engine_tokens: int,
    max_len: int,
    cross: int,
    max_dist: int,
) -> list[str]:
    out: list[str] = []
    modern = config.modern
    if not config.vllm_version:
        out.append(f"vLLM version unknown: modelled as {config.version}")
    elif not modern:
        out.append(
            f"vLLM {config.version} has no start-up memory check: a worker over its node's budget is OOM-killed "
            "(-9) instead of refusing to start"
        )
    weights_only_oom = False
    for r in ranks:
        if r.verdict == "oom" and r.strict_bind:
            out.append(
                f"{r.label} binds memory to node {r.node} ({gib(r.node_available_bytes)} available) but needs "
                f"~{gib(r.need_bytes)} ({gib(r.weights_bytes)} weights + {gib(r.kv_bytes)} KV + "
                f"{gib(r.overhead_bytes)} runtime): it will be OOM-killed (-9)"
            )
            if r.weights_bytes + r.overhead_bytes > r.node_budget_bytes:
                weights_only_oom = True
        elif r.verdict == "fits" and r.strict_bind and r.node is not None:
            kv_word = " (sized by vLLM)" if r.kv_auto else ""
            block = BLOCK_SIZE * max(1, r.kv_bytes_per_token)
            out.append(
                f"{r.label} on node {r.node}: {gib(r.weights_bytes)} weights + {gib(r.kv_bytes)} KV{kv_word} + "
                f"{gib(r.overhead_bytes)} runtime = {gib(r.need_bytes)} of {gib(r.node_budget_bytes)} "
                f"({gib(r.headroom_bytes)} spare); max KV that fits: {r.max_kv_bytes / GIB:.2f} GiB "
                f"(VLLM_CPU_KVCACHE_SPACE={r.max_kv_gib}) = {r.max_kv_bytes // block * BLOCK_SIZE:,} tokens"
            )
        elif r.verdict == "spills":
            out.append(
                f"{r.label}: {gib(r.remote_bytes)} of its {gib(r.need_bytes)} lands off node {r.node} "
                f"(remote share {r.remote_bytes / max(1, r.need_bytes):.0%})"
            )
    if weights_only_oom:
        w = max(r.weights_bytes for r in ranks)
        out.append(
            f"the weights alone ({gib(w)} per rank) and the runtime do not fit the node: shrinking the KV cache "
            "cannot help; spread the model over more ranks (larger --tensor-parallel-size or PP)"
        )
    shared = {r.node for r in ranks if r.shares_node_with and r.strict_bind}
    for n in sorted(x for x in shared if x is not None):
        names = [r.label for r in ranks if r.node == n]
        total_need = sum(r.need_bytes for r in ranks if r.node == n)
        out.append(
            f"{', '.join(names)} all bind memory to node {n}: the node must hold {gib(total_need)} for them together"
        )
    if lay.mode == "nobind" and modern and len(ranks) > 1:
        out.append(
            f"nobind still binds memory in vLLM {config.version}: every worker binds to the node of the first CPU "
            f"it may run on (node {ranks[0].node}), so all {len(ranks)} ranks share that node"
        )
    if lay.mode == "nobind" and len(topology.nodes) > 1:
        out.append("nobind: OpenMP threads are not pinned and run on every node; most memory reads cross nodes")
    for r in ranks:
        if r.strict_bind and r.node is not None and r.cpu_nodes and r.cpu_nodes != (r.node,) and lay.mode != "nobind":
            out.append(
                f"{r.label}'s threads run on nodes {', '.join(map(str, r.cpu_nodes))} but its memory is bound to node "
                f"{r.node}: threads off node {r.node} read remote memory"
            )
    if cross:
        out.append(
            f"{cross} tensor-parallel group(s) span two or more sockets (node distance up to {max_dist}): every "
            "all-reduce crosses the socket link"
        )
    if lay.reserved:
        out.append(
            f"auto bind reserves CPU(s) {format_cpulist(lay.reserved)} for the engine process "
            f"(VLLM_CPU_NUM_OF_RESERVED_CPU={config.reserved_cpus if config.reserved_cpus is not None else 'default'})"
        )
    if engine_tokens and all(r.verdict in ("fits", "spills") for r in ranks):
        per_seq = ranks[0].kv_bytes_per_token * max_len
        seqs = config.max_num_seqs or 128 * config.world_size
        out.append(
            f"KV cache holds {engine_tokens:,} tokens: {engine_tokens / max(1, max_len):.1f} sequences of "
            f"max-model-len {max_len:,} ({gib(per_seq)} each per rank); {engine_tokens // max(1, seqs):,} tokens "
            f"per sequence at {seqs} concurrent (--max-num-seqs)"
        )
    for n in sorted({r.node for r in ranks if r.node is not None}):
        node = topology.node(n)
        if node is not None and node.memory is not None:
            others = node.memory.total_bytes - node.memory.vllm_available_bytes
            if others > max(GIB, node.memory.total_bytes // 20):
                out.append(
                    f"node {n}: {gib(others)} of its {gib(node.memory.total_bytes)} is already in use "
                    "(other processes, kernel, unreclaimable caches)"
                )
        if node is not None and node.memory is not None and node.memory.hugepages_total_bytes:
            out.append(
                f"node {n} keeps {gib(node.memory.hugepages_total_bytes)} in hugepages, which vLLM's weights and KV "
                "do not use"
            )
    node_sum = sum(n.memory.total_bytes for n in topology.nodes if n.memory is not None)
    sysmem = topology.system_mem_total_bytes
    if sysmem and node_sum and abs(node_sum - sysmem) > 0.1 * sysmem:
        out.append(
            f"the nodes' MemTotal add up to {gib(node_sum)} but /proc/meminfo says {gib(sysmem)}: memory may be "
            "onlined lazily; vLLM sizes from the node figure, and so does this plan"
        )
    if model.notes:
        out.extend(f"model: {n}" for n in model.notes)
    return [*early, *out]
