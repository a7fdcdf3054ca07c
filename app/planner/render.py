"""Plans and candidate lists as rich tables (the ``plan`` command), without Textual."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from numatop_llm.planner.plan import Plan
from numatop_llm.planner.solve import Candidate
from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.units import gib_number as _g

VERDICT_STYLE = {"fits": "bold green", "spills": "bold yellow", "oom": "bold red", "error": "bold magenta"}


def _verdict(v: str) -> Text:
    return Text(v, style=VERDICT_STYLE.get(v, ""))


def plan_table(plan: Plan) -> Table:
    """One row per rank (GiB): node, CPUs, weights, KV, runtime, need, node budget, spare, max KV, verdict."""
    t = Table(title=f"{plan.model} — {plan.config.summary()}", title_justify="left", expand=False)
    for name, justify in (
        ("worker", "left"),
        ("node", "right"),
        ("CPUs", "left"),
        ("weights", "right"),
        ("KV", "right"),
        ("runtime", "right"),
        ("need", "right"),
        ("budget", "right"),
        ("spare", "right"),
        ("max KV", "right"),
        ("verdict", "left"),
    ):
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in plan.ranks:
        cpus = format_cpulist(r.cpus) if r.cpus else "-"
        if len(cpus) > 18:
            cpus = f"{len(r.cpus)} CPUs"
        node = "-" if r.node is None else str(r.node)
        if r.shares_node_with:
            node += "*"
        spare = r.headroom_bytes
        t.add_row(
            r.label,
            node,
            cpus,
            _g(r.weights_bytes),
            _g(r.kv_bytes) + ("a" if r.kv_auto else ""),
            _g(r.overhead_bytes),
            _g(r.need_bytes),
            _g(r.node_budget_bytes),
            Text(_g(spare), style="red" if spare < 0 else ""),
            str(r.max_kv_gib),
            _verdict(r.verdict),
        )
    t.caption = "GiB per rank; KV 'a' = sized by vLLM (VLLM_CPU_KVCACHE_SPACE unset); max KV = whole GiB that fit"
    t.caption_justify = "left"
    return t


def plan_renderable(plan: Plan) -> Group:
    parts: list = [plan_table(plan)]
    line = Text("verdict: ")
    line.append_text(_verdict(plan.verdict))
    if plan.kv_tokens:
        line.append(f"   KV tokens: {plan.kv_tokens:,}   usable CPUs: {plan.usable_cpus}")
    parts.append(line)
    for e in plan.errors:
        parts.append(Text(f"vLLM: {e}", style="magenta"))
    for f in plan.findings:
        parts.append(Text(f"• {f}"))
    if any(r.shares_node_with for r in plan.ranks):
        parts.append(Text("* node shared by several ranks: the budget counts all of them", style="dim"))
    return Group(*parts)


def candidates_table(cands: list[Candidate]) -> Table:
    t = Table(title="Ranked configurations (best first)", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("verdict")
    t.add_column("why")
    for i, c in enumerate(cands, 1):
        t.add_row(str(i), f"{c.score:.0f}", _verdict(c.plan.verdict), c.why)
    return t


def print_plan(plan: Plan, console: Console | None = None) -> None:
    (console or Console()).print(plan_renderable(plan))


def print_candidates(cands: list[Candidate], model: str = "MODEL", console: Console | None = None) -> None:
    console = console or Console()
    console.print(candidates_table(cands))
    best = next((c for c in cands if c.plan.fits), None)
    if best is not None:
        console.print(Text("best: ", style="bold") + Text(best.config.command(model)))
