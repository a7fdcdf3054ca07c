"""Plan and solve on a machine what-if (nodes per socket, BIOS interleave) under a launch policy
(``numactl``, ``CPU_VISIBLE_MEMORY_NODES``), with the remote-traffic cost beside the fit.

The one entry the CLI and the dashboard share: ``MachineWhatIf`` holds the derived machine, the
launch policy and the topology vLLM's workers would see; ``plan`` / ``solve`` run the ordinary
planner on it and attach a :class:`~numatop_llm.planner.placement.Placement` to each result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from numatop_llm.planner.config import PlanConfig
from numatop_llm.planner.machine import Machine, MachineError, derive, parse_interleave_sets
from numatop_llm.planner.model import ModelSpec
from numatop_llm.planner.placement import LaunchPolicy, Placement, cost_score, parse_launch, place, topology_for_vllm
from numatop_llm.planner.plan import Plan, make_plan
from numatop_llm.planner.solve import Candidate, solve
from numatop_llm.probes.models import Engine, Topology

__all__ = ["MachineError", "MachineWhatIf", "build", "plan", "solve_ranked"]


@dataclass(frozen=True)
class MachineWhatIf:
    """A machine to plan on and how the engine is launched on it."""

    machine: Machine
    launch: LaunchPolicy | None
    #: the topology vLLM's workers see (CPUs narrowed by numactl, memory nodes by CPU_VISIBLE_MEMORY_NODES)
    topology: Topology
    notes: tuple[str, ...] = field(default=())
    #: the machine options as ``plan``/``relaunch`` flags (``--nodes-per-socket 1``)
    machine_args: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return (
            self.machine.is_whatif
            or (self.launch is not None and not self.launch.is_default)
            or bool(self.launch and self.launch.numactl)
        )

    def to_json(self) -> dict:
        out = self.machine.to_json()
        out["launch"] = self.launch.summary() if self.launch else "no numactl"
        out["launch_env"] = self.launch.env() if self.launch else {}
        out["notes"] = list(out["notes"]) + list(self.notes)
        return out


def build(
    topology: Topology,
    *,
    nodes_per_socket: int | None = None,
    interleave: str | None = None,
    numactl: str | list[str] | None = None,
    visible_nodes: str | None = None,
) -> MachineWhatIf:
    """Derive the machine and parse the launch policy; MachineError / ValueError with one line."""
    sets = parse_interleave_sets(interleave) if interleave else None
    machine = derive(topology, nodes_per_socket=nodes_per_socket, interleave=sets)
    launch = None
    if numactl or visible_nodes:
        launch = parse_launch(numactl, machine.topology, visible_nodes)
    topo, notes = topology_for_vllm(machine.topology, launch)
    margs: list[str] = []
    if nodes_per_socket is not None:
        margs += ["--nodes-per-socket", str(nodes_per_socket)]
    if interleave:
        margs += ["--interleave", interleave]
    return MachineWhatIf(machine=machine, launch=launch, topology=topo, notes=tuple(notes), machine_args=tuple(margs))


def cli_words(what: MachineWhatIf) -> str:
    """The BIOS what-if as command-line flags, shell-quoted."""
    import shlex

    return shlex.join(what.machine_args)


def plan(
    model: ModelSpec, what: MachineWhatIf, config: PlanConfig, *, engine: Engine | None = None
) -> tuple[Plan, Placement]:
    """The plan on the what-if machine and its placement cost. A running engine's memory is counted back
    only on the machine as it is (its node ids mean nothing on a derived one)."""
    topo = what.topology
    if what.machine.is_whatif and engine is not None:
        topo = count_back(what, engine)
    p = make_plan(model, topo, config, engine=engine if not what.machine.is_whatif else None)
    pl = place(p, what.machine, what.launch)
    if pl.verdict == "oom" and p.verdict in ("fits", "spills"):
        p = p.model_copy(update={"verdict": "oom"})
    return p, pl


def solve_ranked(
    model: ModelSpec,
    what: MachineWhatIf,
    base: PlanConfig,
    limit: int = 10,
    *,
    engine: Engine | None = None,
) -> list[tuple[Candidate, Placement]]:
    """``solve`` on the what-if machine, re-ranked with the remote-traffic cost (``placement.cost_score``)."""
    topo = count_back(what, engine) if what.machine.is_whatif and engine is not None else what.topology
    cands = solve(model, topo, base, limit=max(limit * 3, 30), engine=engine if not what.machine.is_whatif else None)
    out: list[tuple[Candidate, Placement]] = []
    for c in cands:
        pl = place(c.plan, what.machine, what.launch)
        why = c.why
        if pl.verdict == "oom" and c.plan.verdict in ("fits", "spills"):
            # the launcher's strict membind (kept by this vLLM) cannot hold the ranks: not a fit
            c = c.model_copy(update={"plan": c.plan.model_copy(update={"verdict": "oom"}), "score": c.score - 1000})
            why += "; the launcher's membind cannot hold it (oom)"
        if pl.mean_remote_share >= 0.005:
            why += f"; {pl.mean_remote_share:.0%} of traffic remote (avg distance {pl.mean_distance:.1f})"
        out.append((c.model_copy(update={"score": cost_score(c.score, pl), "why": why}), pl))
    out.sort(key=lambda cp: (-cp[0].score, cp[0].config.tp * cp[0].config.pp, cp[0].config.pp))
    return out[: max(0, limit)]


def count_back(what: MachineWhatIf, engine: Engine) -> Topology:
    """The derived machine with the running engine's workers' resident bytes counted as available again (the
    engine is stopped for the BIOS change), mapped from today's nodes onto the derived ones."""
    freed: dict[int, int] = {}
    for w in engine.workers():
        for old, b in w.node_bytes.items():
            freed[old] = freed.get(old, 0) + b
    nodes = []
    for n in what.topology.nodes:
        mem = n.memory
        back = sum(freed.get(o, 0) for o in what.machine.derived_from.get(n.id, ()))
        if mem is not None and back:
            free = min(mem.total_bytes, mem.free_bytes + back)
            mem = mem.model_copy(update={"free_bytes": free, "used_bytes": max(0, mem.total_bytes - free)})
        nodes.append(n.model_copy(update={"memory": mem}))
    return what.topology.model_copy(update={"nodes": tuple(nodes)})


def candidate_json(c: Candidate, pl: Placement) -> dict[str, Any]:
    out = c.to_json()
    out["remote_share"] = round(pl.mean_remote_share, 4)
    out["avg_distance"] = round(pl.mean_distance, 3)
    return out


def print_machine(what: MachineWhatIf, pl: Placement | None, console: Any) -> None:
    """The machine header and the cost lines (rich console)."""
    from rich.markup import escape

    m = what.machine
    console.print(
        f"[bold]machine[/]: {m.label} — {len(m.topology.nodes)} node(s): "
        + ", ".join(
            f"node {n.id} {len(n.cpus)} CPUs {((n.memory.total_bytes if n.memory else 0) / 2**30):.1f} GiB"
            for n in m.topology.nodes
        )
    )
    for c in m.changes:
        console.print(f"  change: {escape(c)}")
    if what.launch is not None:
        console.print(f"  launch: {escape(what.launch.summary())}")
    for n in (*m.notes, *what.notes):
        console.print(f"  note: {escape(n)}")
    if pl is not None:
        print_machine_cost(pl, console)


def print_machine_cost(pl: Placement, console: Any) -> None:
    from rich.markup import escape

    console.print(f"[bold]what you give up[/]: {escape(pl.headline())}")
    for f in pl.findings:
        console.print(f"  • {escape(f)}")


def save(path: Any, what: MachineWhatIf, config: PlanConfig, p: Plan, pl: Placement) -> None:
    """Write the what-if machine (its topology as the kernel would report it), the configuration and the
    predicted verdict, for ``plan --check-machine`` after the reboot."""
    import json

    doc = {
        "label": what.machine.label,
        "changes": list(what.machine.changes),
        "machine_args": list(what.machine_args),
        "topology": what.machine.topology.model_dump(mode="json"),
        "config": config.model_dump(mode="json"),
        "verdict": p.verdict,
        "placement": pl.to_json(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def load(path: Any) -> dict[str, Any]:
    """Read a file written by :func:`save` (ValueError when it is not one)."""
    import json

    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "topology" not in doc or "config" not in doc:
        raise ValueError("not a machine what-if saved by plan --save-machine")
    return {
        "label": str(doc.get("label", "")),
        "topology": Topology.model_validate(doc["topology"]),
        "config": PlanConfig.model_validate(doc["config"]),
        "verdict": doc.get("verdict"),
    }
