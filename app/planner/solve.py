"""The solver: every sensible configuration for this machine, planned and ranked.

Enumerated: TP sizes the model can be split by (attention and KV heads, MLP and padded vocab),
PP sizes up to the node count, bind layouts that keep each rank inside one node (``auto``; the
same one-rank-per-node lists on other node sets: one socket first, or the nodes with most free
memory; two ranks per node when there are more ranks than nodes; ``nobind``), and KV sizes
(vLLM's own when unset, the base configuration's, and the largest whole GiB that keeps a margin).

Ranked by ``score``: fits with margin first, then more usable cores and KV tokens, then less
cross-socket traffic (see :func:`score_plan`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from numatop_llm.planner.bind import memory_nodes, node_split_spec
from numatop_llm.planner.config import PlanConfig
from numatop_llm.planner.model import ModelSpec
from numatop_llm.planner.plan import GIB, MARGIN_MIN_BYTES, Plan, gib, make_plan
from numatop_llm.planner.shard import divisibility_errors
from numatop_llm.probes.models import Engine, Topology

#: spare kept when the solver picks an explicit KV size: 10% of the largest KV that fits
KV_MARGIN = 0.9


class Candidate(BaseModel):
    """One ranked configuration: its plan, a score (higher is better) and a one-line reason."""

    model_config = ConfigDict(frozen=True)

    config: PlanConfig
    plan: Plan
    score: float
    why: str

    def to_json(self) -> dict:
        p = self.plan
        return {
            "config": self.config.summary(),
            "tp": self.config.tp,
            "pp": self.config.pp,
            "bind": self.config.bind,
            "kv_gib": self.config.kv_gib,
            "env": self.config.env(),
            "args": self.config.args(),
            "verdict": p.verdict,
            "score": round(self.score, 2),
            "why": self.why,
            "kv_tokens": p.kv_tokens,
            "usable_cpus": p.usable_cpus,
            "min_headroom_bytes": p.min_headroom_bytes if p.ranks else None,
        }


def effective_cores(plan: Plan) -> int:
    """Cores that do useful work: per pipeline stage, TP × the smallest rank's CPU count (TP ranks wait
    for each other at every all-reduce)."""
    if not plan.ranks:
        return 0
    out = 0
    for stage in {r.pp_rank for r in plan.ranks}:
        group = [r for r in plan.ranks if r.pp_rank == stage]
        cpus = [len(r.cpus) for r in group]
        if any(r.shares_node_with for r in group) and plan.config.bind == "nobind":
            out = max(out, min(cpus))  # every rank on all CPUs: they share them
            continue
        out = max(out, len(group) * min(cpus))
    return out


def has_margin(plan: Plan) -> bool:
    for r in plan.ranks:
        floor = max(MARGIN_MIN_BYTES, int(0.03 * r.node_total_bytes))
        if r.headroom_bytes < floor:
            return False
    return bool(plan.ranks)


def score_plan(plan: Plan, total_cores: int, best_tokens: int) -> float:
    """1000 × fits + 100 × margin + 60 × share of cores used + 30 × KV tokens (vs the best) − 10 × cross-socket.

    A plan that spills counts half a fit; every remote byte share costs like cross-socket traffic.
    """
    if plan.verdict == "error":
        return -100.0 - len(plan.errors)
    fits = 1.0 if plan.fits else (0.5 if plan.verdict == "spills" else 0.0)
    margin = 1.0 if plan.fits and has_margin(plan) else 0.0
    # capped: unpinned (nobind) ranks each "see" every CPU, but they share them
    cores = min(1.0, effective_cores(plan) / max(1, total_cores))
    tokens = min(1.0, plan.kv_tokens / best_tokens) if best_tokens else 0.0
    stages = max(1, plan.config.pp)
    cross = plan.cross_socket_groups / stages
    remote = sum(r.remote_bytes for r in plan.ranks) / max(1, sum(r.need_bytes for r in plan.ranks))
    # nobind: OpenMP threads are not pinned, the scheduler moves them across nodes, reads go remote
    unpinned = 1.0 if plan.config.bind == "nobind" else 0.0
    score = 1000 * fits + 100 * margin + 60 * cores + 30 * tokens - 10 * cross - 10 * remote - 20 * unpinned
    if not plan.fits:
        score -= 10 * sum(max(0, r.need_bytes - r.node_budget_bytes) for r in plan.ranks) / GIB
    return score


def _why(plan: Plan, total_cores: int) -> str:
    cfg = plan.config
    head = f"TP={cfg.tp} PP={cfg.pp} bind={_short_bind(cfg.bind)}"
    if plan.verdict == "error":
        first = plan.errors[0] if plan.errors else "refused"
        return f"{head}: vLLM refuses — {first[:140]}"
    nodes = sorted({r.node for r in plan.ranks if r.node is not None})
    kv = "auto" if cfg.kv_gib is None else f"{cfg.kv_gib:g} GiB"
    parts = [
        f"{head}: {plan.verdict}",
        f"{effective_cores(plan)}/{total_cores} cores on node(s) {','.join(map(str, nodes))}",
        f"KV {kv}/rank = {plan.kv_tokens:,} tokens",
    ]
    if plan.ranks:
        parts.append(f"min spare {gib(plan.min_headroom_bytes)}")
    if plan.cross_socket_groups:
        parts.append("TP crosses sockets")
    remote = sum(r.remote_bytes for r in plan.ranks)
    if remote:
        parts.append(f"{gib(remote)} remote")
    if plan.verdict == "oom":
        worst = max(plan.ranks, key=lambda r: r.need_bytes - r.node_budget_bytes)
        parts.append(f"{worst.label} needs {gib(worst.need_bytes)} > {gib(worst.node_budget_bytes)}")
    return "; ".join(parts)


def _short_bind(bind: str) -> str:
    return bind if len(bind) <= 40 else bind[:37] + "..."


def _node_sets(topology: Topology, r: int) -> list[list[int]]:
    """Node sets for ``r`` one-rank-per-node layouts: auto's order, one socket first, most available first."""
    allowed = memory_nodes(topology)
    if r > len(allowed):
        return []
    out = [allowed[:r]]

    def avail(n: int) -> int:
        node = topology.node(n)
        return node.memory.vllm_available_bytes if node and node.memory else 0

    by_pkg: dict[int, list[int]] = {}
    for n in allowed:
        node = topology.node(n)
        pkg = node.package if node and node.package is not None else -1
        by_pkg.setdefault(pkg, []).append(n)
    # fill the sockets with most available memory first, their richest nodes first
    pkgs = sorted(by_pkg, key=lambda p: -sum(avail(n) for n in by_pkg[p]))
    packed: list[int] = []
    for p in pkgs:
        packed.extend(sorted(by_pkg[p], key=lambda n: (-avail(n), n)))
    out.append(sorted(packed[:r]))
    out.append(sorted(sorted(allowed, key=lambda n: (-avail(n), n))[:r]))
    uniq: list[list[int]] = []
    for s in out:
        if s not in uniq:
            uniq.append(s)
    return uniq


def _binds(topology: Topology, world: int) -> list[str]:
    allowed = memory_nodes(topology)
    out: list[str] = []
    if world <= len(allowed):
        out.append("auto")
        for nodes in _node_sets(topology, world)[1:]:
            out.append(node_split_spec(topology, nodes))
        out.append("nobind")
    elif allowed and world % len(allowed) == 0 and world // len(allowed) <= 2:
        out.append(node_split_spec(topology, allowed, per_node=world // len(allowed)))
    return out


def candidate_configs(model: ModelSpec, topology: Topology, base: PlanConfig) -> list[PlanConfig]:
    """The configurations the solver plans (before KV sizing)."""
    allowed = memory_nodes(topology)
    max_world = max(1, 2 * len(allowed))
    out: list[PlanConfig] = []
    for tp in range(1, max_world + 1):
        if divisibility_errors(model, tp, 1):
            continue
        for pp in range(1, max_world // tp + 1):
            if pp > model.num_layers or (pp > 1 and len(allowed) < 2):
                continue
            for bind in _binds(topology, tp * pp):
                if not bind:
                    continue
                out.append(base.model_copy(update={"tp": tp, "pp": pp, "bind": bind, "kv_gib": base.kv_gib}))
    return out


def solve(
    model: ModelSpec,
    topology: Topology,
    base: PlanConfig | None = None,
    limit: int = 20,
    *,
    engine: Engine | None = None,
) -> list[Candidate]:
    """Plan every candidate configuration and return the best ``limit``, best first."""
    base = base or PlanConfig()
    plans: list[Plan] = []
    seen: set[tuple] = set()

    def add(cfg: PlanConfig) -> Plan:
        plan = make_plan(model, topology, cfg, engine=engine)
        key = (cfg.tp, cfg.pp, tuple(r.cpus for r in plan.ranks), tuple(r.node for r in plan.ranks), cfg.kv_gib)
        if key not in seen or not plan.ranks:
            seen.add(key)
            plans.append(plan)
        return plan

    add(base)
    for cfg in candidate_configs(model, topology, base):
        variants = [cfg]
        if cfg.kv_gib is not None and base.modern:
            variants.append(cfg.model_copy(update={"kv_gib": None}))
        for v in variants:
            plan = add(v)
            if plan.verdict == "error" and any(
                "Not enough allowed" in e or "local world size" in e for e in plan.errors
            ):
                break
            if plan.ranks and plan.verdict in ("fits", "error", "oom"):
                best = min(r.max_kv_bytes for r in plan.ranks)
                kv = int(best * KV_MARGIN) // GIB
                if kv >= 1 and kv != v.kv_gib:
                    add(v.model_copy(update={"kv_gib": float(kv)}))
    total_cores = topology.num_cores or len(topology.cpus_online) or 1
    best_tokens = max((p.kv_tokens for p in plans if p.fits), default=0)
    cands = [
        Candidate(config=p.config, plan=p, score=score_plan(p, total_cores, best_tokens), why=_why(p, total_cores))
        for p in plans
    ]
    cands.sort(key=lambda c: (-c.score, c.config.tp * c.config.pp, c.config.pp))
    return cands[: max(0, limit)]
