"""Findings in plain language, with the numbers: what is wrong or about to go wrong, and where.

``diagnose(snapshot, state)`` is a pure function of what the dashboard knows (the snapshot, the
history of node memory, the planner's verdict, the kills the kernel reported); the Diagnoses
panel, ``numatop-llm snapshot`` style reports and the tests all read the same list.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from numatop_llm.postmortem import Explanation
from numatop_llm.probes.models import Process, Snapshot
from numatop_llm.probes.textio import is_denied
from numatop_llm.units import MIB, gib

#: a node with less than this share of its memory available is "nearly full"
NEARLY_FULL = 0.05
#: memory of a rank on other nodes worth a finding: above both of these
REMOTE_MIN_BYTES = 256 * MIB
REMOTE_MIN_SHARE = 0.05


class Severity(StrEnum):
    """How bad a finding is, most severe first."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    text: str
    pid: int | None = None
    node: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    @property
    def rank(self) -> int:
        return self.severity.rank


class Exited(Protocol):
    pid: int
    explanation: Explanation | None

    @property
    def headline(self) -> str: ...


class History(Protocol):
    """What the diagnoses read beyond one snapshot (``AppState`` provides it)."""

    @property
    def exit(self) -> Exited | None: ...

    @property
    def kills(self) -> list[tuple[float, Explanation]]: ...

    @property
    def plan(self) -> Any: ...

    @property
    def plan_problem(self) -> str | None: ...

    @property
    def plan_note(self) -> str | None: ...

    def growth_rate(self, node: int, seconds: float = 10.0) -> float | None: ...


def _plan_findings(plan: Any, snap: Snapshot) -> list[Finding]:
    out: list[Finding] = []
    labels = {}
    if snap.engine is not None:
        for w in snap.engine.workers():
            if w.rank is not None:
                labels[w.rank] = w.label or f"rank {w.rank}"
    for err in getattr(plan, "errors", ()) or ():
        out.append(Finding(Severity.CRITICAL, "plan-error", f"vLLM will refuse this configuration: {err}"))
    for r in getattr(plan, "ranks", ()) or ():
        verdict = str(getattr(r, "verdict", ""))
        node = getattr(r, "node", None)
        need, budget = getattr(r, "need_bytes", None), getattr(r, "node_budget_bytes", None)
        name = labels.get(r.rank, f"rank {r.rank}")
        if verdict == "oom" and node is not None:
            out.append(
                Finding(
                    Severity.CRITICAL,
                    "will-oom",
                    f"{name} binds memory to node {node} ({gib(budget)} budget) but needs ~{gib(need)}: "
                    "it will be OOM-killed (-9)",
                    node=node,
                )
            )
        elif verdict == "spills":
            out.append(
                Finding(
                    Severity.WARNING,
                    "spills",
                    f"{name} needs ~{gib(need)}, node {node} holds {gib(budget)}: "
                    f"{gib(getattr(r, 'remote_bytes', 0))} will spill to other nodes",
                    node=node,
                )
            )
        elif verdict == "error":
            out.append(Finding(Severity.CRITICAL, "plan-error", f"{name}: configuration error"))
    return out


def diagnose(snap: Snapshot, state: History | None = None) -> list[Finding]:
    """Everything worth telling the operator about this sample, most severe first."""
    out: list[Finding] = []
    topo = snap.topology
    engine = snap.engine

    if state is not None:
        if state.exit is not None:
            e = state.exit
            text = e.headline + (f" — {e.explanation.text}" if e.explanation else "")
            out.append(Finding(Severity.CRITICAL, "engine-exit", text, pid=e.pid))
        elif state.kills:
            for _at, expl in state.kills[-3:]:
                out.append(Finding(Severity.CRITICAL, "oom-kill", expl.text, pid=expl.pid))
        if state.plan is not None and engine is not None:
            out.extend(_plan_findings(state.plan, snap))

    # nodes: nearly full, and strictly bound ranks running out of room
    bound: dict[int, list[Process]] = {}
    for p in engine.workers() if engine else ():
        if p.policy.strict and len(p.policy.nodes) == 1:
            bound.setdefault(p.policy.nodes[0], []).append(p)
    planned_oom = {f.node for f in out if f.code == "will-oom"}
    for n in topo.nodes:
        m = n.memory
        if m is None or m.total_bytes <= 0:
            continue
        avail = m.vllm_available_bytes
        if avail >= NEARLY_FULL * m.total_bytes:
            continue
        rate = state.growth_rate(n.id) if state is not None else None
        ranks = bound.get(n.id, [])
        if ranks and n.id not in planned_oom:
            names = ", ".join(p.display_name for p in ranks)
            eta = ""
            if rate and rate > 0:
                eta = f", growing {gib(rate)}/s: OOM kill (-9) in ~{max(0.0, avail / rate):.0f} s"
            out.append(
                Finding(
                    Severity.CRITICAL,
                    "bind-full",
                    f"{names} binds memory to node {n.id}, which has {gib(avail)} of {gib(m.total_bytes)} left{eta}",
                    node=n.id,
                )
            )
        elif not ranks:
            out.append(
                Finding(
                    Severity.WARNING,
                    "node-full",
                    f"node {n.id} is {100 * (1 - avail / m.total_bytes):.0f}% full ({gib(avail)} available)",
                    node=n.id,
                )
            )

    if engine is not None and engine.is_vllm:
        workers = engine.workers()
        homes: dict[int, list[Process]] = {}
        for w in workers:
            home = w.home_node
            if home is not None:
                homes.setdefault(home, []).append(w)
            off = w.off_node_threads
            if off:
                counts: dict[int, int] = {}
                for t in w.threads:
                    if t.node is not None and t.node != home:
                        counts[t.node] = counts.get(t.node, 0) + 1
                where = max(sorted(counts), key=lambda k: counts[k])
                extra = f" (and {off - counts[where]} on others)" if off > counts[where] else ""
                out.append(
                    Finding(
                        Severity.WARNING,
                        "threads-off-node",
                        f"{counts[where]} threads of {w.display_name} run on node {where}{extra}, "
                        f"memory is on node {home}",
                        pid=w.pid,
                        node=where,
                    )
                )
            remote = w.remote_bytes
            total = sum(w.node_bytes.values())
            if home is not None and remote > REMOTE_MIN_BYTES and total and remote > REMOTE_MIN_SHARE * total:
                far = {n: b for n, b in w.node_bytes.items() if n != home}
                top = max(sorted(far), key=lambda k: far[k])
                out.append(
                    Finding(
                        Severity.WARNING,
                        "memory-off-node",
                        f"{w.display_name} has {gib(remote)} ({100 * remote / total:.0f}%) of its memory "
                        f"off node {home}, most on node {top}",
                        pid=w.pid,
                        node=top,
                    )
                )
            if w.policy.strict and len(w.policy.nodes) == 1 and w.threads:
                tn = w.thread_nodes
                busiest = max(sorted(tn), key=lambda k: tn[k]) if tn else None
                if busiest is not None and busiest != w.policy.nodes[0] and tn[busiest] > len(w.threads) // 2:
                    out.append(
                        Finding(
                            Severity.WARNING,
                            "bind-mismatch",
                            f"{w.display_name} binds memory to node {w.policy.nodes[0]} "
                            f"but most threads run on node {busiest}",
                            pid=w.pid,
                            node=busiest,
                        )
                    )
        for node, ws in sorted(homes.items()):
            if len(ws) > 1:
                out.append(
                    Finding(
                        Severity.WARNING,
                        "shared-node",
                        f"{' and '.join(w.display_name for w in ws)} share node {node}: its budget must hold both",
                        node=node,
                    )
                )
        cfg = engine.config
        if cfg.kv_cache_gib is None and workers:
            out.append(
                Finding(Severity.INFO, "kv-unset", "VLLM_CPU_KVCACHE_SPACE unset: KV cache sized from node memory")
            )
        if cfg.omp_threads_bind in (None, "", "nobind") and workers:
            out.append(
                Finding(
                    Severity.INFO,
                    "nobind",
                    f"VLLM_CPU_OMP_THREADS_BIND={cfg.omp_threads_bind or '(unset)'}: threads are not pinned, "
                    "memory goes where first touched",
                )
            )

    # the kernel's node figures against /proc/meminfo (memory onlined lazily)
    node_sum = sum(n.total_bytes or 0 for n in topo.nodes)
    sys_total = topo.system_mem_total_bytes
    if sys_total and node_sum and node_sum < 0.9 * sys_total:
        out.append(
            Finding(
                Severity.INFO,
                "lazy-online",
                f"node totals add to {gib(node_sum)} but /proc/meminfo says {gib(sys_total)}: memory is onlined "
                "lazily; vLLM sizes from the node figure",
            )
        )
    if state is not None and state.plan_problem and engine is not None and engine.is_vllm:
        out.append(Finding(Severity.INFO, "no-plan", state.plan_problem))
    if state is not None and state.plan_note and engine is not None:
        out.append(Finding(Severity.INFO, "plan-note", state.plan_note))
    denied = [d for d in snap.degraded if is_denied(d)]
    if denied:
        out.append(
            Finding(
                Severity.INFO,
                "permission",
                f"{len(denied)} file(s) not readable ({denied[0]}): run as the engine's user or root to see all",
            )
        )
    if snap.late_seconds > 0:
        out.append(Finding(Severity.INFO, "late", f"sample was {snap.late_seconds:.1f} s late: the machine is busy"))
    out.sort(key=lambda f: f.rank)
    return out
