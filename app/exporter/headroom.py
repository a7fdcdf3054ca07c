"""Strict-bind headroom per rank: how much more a bound worker can take before the kernel kills it.

From the planner's verdict when there is one (node budget − predicted need), else from what the
bind node can still give.
"""

from __future__ import annotations

from dataclasses import dataclass

from numatop_llm.planner import Plan
from numatop_llm.probes.models import Engine, Process, Topology
from numatop_llm.units import MIB

#: fallback "will OOM" rule for a strictly bound rank: headroom below this many bytes, or below
#: this fraction of the node, leaves no room for the next allocation (activations, a new block)
WILL_OOM_MIN_BYTES = 256 * MIB
WILL_OOM_NODE_FRACTION = 0.02


# --------------------------------------------------------------------------------------------
# Strict-bind headroom per rank
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankHeadroom:
    """How much more a strictly bound rank can take on its node before the kernel OOM-kills it."""

    rank: int
    node: int
    headroom_bytes: int
    will_oom: bool
    #: ``planner`` (node budget − predicted need) or ``node_available`` (the fallback rule)
    source: str
    budget_bytes: int | None = None
    need_bytes: int | None = None


def _strict_node(p: Process) -> int | None:
    if p.policy.strict and len(p.policy.nodes) == 1:
        return p.policy.nodes[0]
    return None


def fallback_headroom(engine: Engine, topology: Topology) -> dict[int, RankHeadroom]:
    """Headroom without the planner: what the bind node can still give (vLLM's "available").

    Only ranks whose memory is strictly bound to one node have a strict-bind headroom; the
    kernel lets other ranks spill to other nodes. Under a strict bind the kernel reclaims the
    node's page cache before it kills, so free + file LRU + reclaimable slab is what is left
    (the same sum vLLM 0.32 calls a node's available memory). A cgroup memory limit clamps it.
    """
    out: dict[int, RankHeadroom] = {}
    for w in engine.workers():
        node_id = _strict_node(w)
        if node_id is None or w.rank is None:
            continue
        node = topology.node(node_id)
        if node is None or node.memory is None:
            continue
        headroom = node.memory.vllm_available_bytes
        cg = w.cgroup
        if cg is not None and cg.memory_max is not None and cg.memory_current is not None:
            headroom = min(headroom, cg.memory_max - cg.memory_current)
        floor = max(WILL_OOM_MIN_BYTES, int(WILL_OOM_NODE_FRACTION * node.memory.total_bytes))
        out[w.rank] = RankHeadroom(
            rank=w.rank,
            node=node_id,
            headroom_bytes=headroom,
            will_oom=headroom < floor,
            source="node_available",
        )
    return out


def headroom_from_plan(plan: Plan | None, engine: Engine) -> dict[int, RankHeadroom] | None:
    if plan is None:
        return None
    homes = {w.rank: w.home_node for w in engine.workers() if w.rank is not None}
    out: dict[int, RankHeadroom] = {}
    for i, r in enumerate(getattr(plan, "ranks", ()) or ()):
        rank = getattr(r, "rank", i)
        budget = getattr(r, "node_budget_bytes", None)
        need = getattr(r, "need_bytes", None)
        if budget is None or need is None:
            continue
        node = getattr(r, "node", None)
        if node is None:
            node = homes.get(rank)
        if node is None:
            continue
        verdict = str(getattr(r, "verdict", "")).lower()
        out[rank] = RankHeadroom(
            rank=rank,
            node=int(node),
            headroom_bytes=int(budget) - int(need),
            will_oom=int(need) > int(budget) or "oom" in verdict,
            source="planner",
            budget_bytes=int(budget),
            need_bytes=int(need),
        )
    return out or None
