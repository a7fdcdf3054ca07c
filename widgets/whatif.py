"""The what-if editor: change TP / PP / bind / KV, see each rank's verdict per node, relaunch.

The screen renders the planner's plans for the model and machine the app hands it (the planner
is pure arithmetic: it reads no /proc), and returns the chosen configuration with ``dismiss`` —
the app runs the relaunch.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from numatop_llm.planner import Candidate, ModelSpec, Plan, PlanConfig, machineplan, make_plan, solve
from numatop_llm.planner.placement import Placement
from numatop_llm.probes.models import Engine, Topology
from numatop_llm.units import gib_short as gib

VERDICT_STYLE = {"fits": "bold green", "spills": "bold yellow", "oom": "bold white on red", "error": "bold red"}


class WhatIfScreen(Screen[PlanConfig | None]):
    """Edit a configuration and see the planner's prediction; Enter relaunches with it.

    ``base`` is the running configuration, ``start`` the one the form opens on. ``preview(config)``
    returns the masked command/env diff lines. The screen is
    dismissed with the chosen ``PlanConfig`` (relaunch) or ``None``.
    """

    BINDINGS = [
        Binding("escape", "cancel", "back"),
        Binding("ctrl+b", "best", "best plan"),
        Binding("ctrl+r", "relaunch", "relaunch"),
        Binding("ctrl+n", "machine", "machine", show=False),
    ]
    DEFAULT_CSS = """
    WhatIfScreen { background: $background; }
    WhatIfScreen #form, WhatIfScreen #machine { height: auto; }
    WhatIfScreen #form Vertical, WhatIfScreen #machine Vertical { width: 1fr; height: auto; }
    WhatIfScreen #form Label { padding: 0 1; color: $text-muted; }
    WhatIfScreen Input { width: 1fr; margin: 0 1; }
    WhatIfScreen #verdict { padding: 0 1; height: auto; }
    WhatIfScreen #ranks { height: auto; max-height: 12; }
    WhatIfScreen #candidates { height: auto; max-height: 10; }
    WhatIfScreen #findings, WhatIfScreen #diff { padding: 0 1; height: auto; }
    WhatIfScreen #go { margin: 0 1; width: 1fr; }
    WhatIfScreen .section { padding: 0 1; text-style: bold; color: $accent; }
    """

    def __init__(
        self,
        model: ModelSpec,
        topology: Topology,
        base: PlanConfig,
        *,
        start: PlanConfig | None = None,
        preview: Callable[[PlanConfig], list[str]] | None = None,
        can_relaunch: bool = True,
        why_not: str = "",
        engine: Engine | None = None,
        machine_options: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.topology = topology
        self.base = base
        self.config = start or base
        self.preview = preview
        self.can_relaunch = can_relaunch
        self.why_not = why_not
        #: the running engine: its own memory is not counted against the budgets of its replacement
        self.engine = engine
        self.plan: Plan | None = None
        self.candidates: list[Candidate] = []
        #: offer the machine options (nodes per socket, BIOS interleave, numactl, CPU_VISIBLE_MEMORY_NODES)
        self.machine_options = machine_options
        #: the machine what-if of the form (None: not offered, or the form is wrong), its cost, the form's key
        self.what: machineplan.MachineWhatIf | None = None
        self.placement: Placement | None = None
        self._what_key: tuple[str, ...] | None = None

    def compose(self) -> ComposeResult:
        c = self.config
        with VerticalScroll():
            yield Static(
                Text.assemble(
                    ("What-if ", "bold"), (f"{self.model.name}", "bold cyan"), f"   now: {self.base.summary()}"
                ),
                id="title",
            )
            with Horizontal(id="form"):
                for key, label, value in (
                    ("tp", "TP", str(c.tp)),
                    ("pp", "PP", str(c.pp)),
                    ("bind", "bind", c.bind or "auto"),
                    ("kv", "KV GiB/rank", "" if c.kv_gib is None else f"{c.kv_gib:g}"),
                ):
                    with Vertical():
                        yield Label(label)
                        yield Input(value=value, id=key, placeholder="unset" if key == "kv" else "", compact=True)
            if self.machine_options:
                with Horizontal(id="machine"):
                    for key, label, hint in (
                        ("nps", "nodes/socket (BIOS)", "as is"),
                        ("interleave", "interleave (BIOS)", "e.g. 0-3|4-7"),
                        ("numactl", "numactl", "e.g. --interleave=0-3"),
                        ("visible", "CPU_VISIBLE_MEMORY_NODES", "all"),
                    ):
                        with Vertical():
                            yield Label(label)
                            yield Input(value="", id=key, placeholder=hint, compact=True)
            yield Static(id="verdict")
            yield Button("Relaunch with this plan (Enter)", id="go", variant="primary", compact=True)
            yield DataTable(id="ranks", cursor_type="none", zebra_stripes=True)
            yield Static(id="findings")
            yield Label("Ranked configurations (Enter on a row to load it)", classes="section")
            yield DataTable(id="candidates", cursor_type="row")
            yield Label("What changes", classes="section")
            yield Static(id="diff")
        yield Footer()

    def on_mount(self) -> None:
        ranks = self.query_one("#ranks", DataTable)
        ranks.add_columns("rank", "node", "CPUs", "weights", "KV", "overhead", "need", "budget", "verdict")
        cands = self.query_one("#candidates", DataTable)
        cands.add_columns("#", "configuration", "verdict", "min headroom", "KV tokens", "why")
        self.recompute()
        self.query_one("#go", Button).focus()
        self.solve()

    # -- reading the form ------------------------------------------------------------------

    def _form_config(self) -> tuple[PlanConfig | None, str | None]:
        def val(key: str) -> str:
            return self.query_one(f"#{key}", Input).value.strip()

        try:
            tp = int(val("tp") or 1)
            pp = int(val("pp") or 1)
        except ValueError:
            return None, "TP and PP must be whole numbers"
        if tp < 1 or pp < 1:
            return None, "TP and PP must be at least 1"
        kv_text = val("kv")
        try:
            kv = float(kv_text) if kv_text else None
        except ValueError:
            return None, f"KV GiB must be a number or empty (unset), not {kv_text!r}"
        if kv is not None and kv <= 0:
            return None, "KV GiB must be above 0 (leave empty for vLLM's own sizing)"
        try:
            cfg = self.base.model_copy(update={"tp": tp, "pp": pp, "bind": val("bind") or "auto", "kv_gib": kv})
        except Exception as exc:
            return None, str(exc).splitlines()[0]
        return cfg, None

    def _form_machine(self) -> str | None:
        """Derive the machine what-if from the machine inputs (cached); a problem as one line, else None."""
        if not self.machine_options:
            return None
        key = tuple(self.query_one(f"#{k}", Input).value.strip() for k in ("nps", "interleave", "numactl", "visible"))
        if key == self._what_key:
            return None if self.what is not None else self._what_problem
        self._what_key = key
        nps, interleave, numactl, visible = key
        self.what, self._what_problem = None, None
        try:
            n = int(nps) if nps else None
        except ValueError:
            self._what_problem = f"nodes/socket must be a whole number, not {nps!r}"
            return self._what_problem
        try:
            self.what = machineplan.build(
                self.topology,
                nodes_per_socket=n,
                interleave=interleave or None,
                numactl=numactl or None,
                visible_nodes=visible or None,
            )
        except ValueError as exc:
            self._what_problem = str(exc)
        return self._what_problem

    _what_problem: str | None = None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self.recompute()
        if event.input.id in ("nps", "interleave", "numactl", "visible") and self.what is not None:
            self.solve()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.query_one("#go", Button).focus()

    def recompute(self) -> None:
        cfg, problem = self._form_config()
        verdict = self.query_one("#verdict", Static)
        ranks = self.query_one("#ranks", DataTable)
        findings = self.query_one("#findings", Static)
        ranks.clear()
        problem = problem or self._form_machine()
        if cfg is None or problem:
            self.plan = None
            verdict.update(Text(f"✖ {problem}", style="bold red"))
            findings.update("")
            return
        self.config = cfg
        if self.what is not None:
            self.plan, self.placement = machineplan.plan(self.model, self.what, cfg, engine=self.engine)
            plan = self.plan
        else:
            self.plan = plan = make_plan(self.model, self.topology, cfg, engine=self.engine)
        v = str(plan.verdict)
        line = Text.assemble(("Prediction: ", "bold"), (f" {v.upper()} ", VERDICT_STYLE.get(v, "bold")))
        line.append(f"  {cfg.summary()}")
        if plan.kv_tokens:
            line.append(f"  · KV {plan.kv_tokens:,} tokens")
        if self.what is not None and self.placement is not None:
            m = self.what.machine
            line.append("\nMachine: ", style="bold")
            line.append(f"{m.label}")
            if self.what.launch is not None:
                line.append(f" · {self.what.launch.summary()}")
            if m.needs_reboot:
                line.append("  (BIOS change: applied after a reboot)", style="yellow")
            line.append("\nWhat you give up: ", style="bold")
            remote = self.placement.mean_remote_share
            line.append(self.placement.headline(), style="bold yellow" if remote >= 0.25 else "")
        if not self.can_relaunch:
            line.append(f"\n{self.why_not}", style="dim")
        verdict.update(line)
        for r in plan.ranks:
            ranks.add_row(
                r.label,
                "-" if r.node is None else str(r.node),
                _cpus(r.cpus),
                gib(r.weights_bytes),
                gib(r.kv_bytes),
                gib(r.overhead_bytes),
                gib(r.need_bytes),
                gib(r.node_budget_bytes),
                Text(str(r.verdict), style=VERDICT_STYLE.get(str(r.verdict), "")),
            )
        lines = Text()
        extra = (
            (*self.what.machine.changes, *self.placement.findings) if self.what is not None and self.placement else ()
        )
        for i, f in enumerate((*plan.errors, *extra, *plan.findings)):
            if i:
                lines.append("\n")
            lines.append("• " + f, style="red" if i < len(plan.errors) else "")
        findings.update(lines)
        diff = self.query_one("#diff", Static)
        if self.preview is not None:
            diff.update("\n".join(self.preview(cfg)) or "nothing changes")

    # -- the solver ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="solve")
    def solve(self) -> None:
        what = self.what
        try:
            if what is not None:
                ranked = machineplan.solve_ranked(self.model, what, self.base, 12, engine=self.engine)
                cands = [c for c, _ in ranked]
            else:
                cands = solve(self.model, self.topology, self.base, limit=12, engine=self.engine)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"solver failed: {exc}", severity="error")
            return
        self.app.call_from_thread(self._show_candidates, cands)

    def _show_candidates(self, cands: list[Candidate]) -> None:
        self.candidates = cands
        table = self.query_one("#candidates", DataTable)
        table.clear()
        for i, c in enumerate(cands, 1):
            v = str(c.plan.verdict)
            table.add_row(
                str(i),
                c.config.summary(),
                Text(v, style=VERDICT_STYLE.get(v, "")),
                gib(c.plan.min_headroom_bytes),
                f"{c.plan.kv_tokens:,}",
                c.why,
                key=str(i),
            )

    def load(self, cfg: PlanConfig) -> None:
        """Put a configuration into the form (and recompute)."""
        with self.prevent(Input.Changed):
            self.query_one("#tp", Input).value = str(cfg.tp)
            self.query_one("#pp", Input).value = str(cfg.pp)
            self.query_one("#bind", Input).value = cfg.bind or "auto"
            self.query_one("#kv", Input).value = "" if cfg.kv_gib is None else f"{cfg.kv_gib:g}"
        self.recompute()

    @on(DataTable.RowSelected, "#candidates")
    def _pick(self, event: DataTable.RowSelected) -> None:
        i = int(event.row_key.value or 0) - 1
        if 0 <= i < len(self.candidates):
            self.load(self.candidates[i].config)
            self.query_one("#go", Button).focus()

    def action_best(self) -> None:
        if self.candidates:
            self.load(self.candidates[0].config)

    # -- leaving -------------------------------------------------------------------------

    @on(Button.Pressed, "#go")
    def action_relaunch(self) -> None:
        if self.plan is None:
            self.notify("fix the form first", severity="error")
            return
        if not self.can_relaunch:
            self.notify(self.why_not, severity="warning", timeout=6)
            return
        if str(self.plan.verdict) in ("oom", "error"):
            self.notify(
                f"the planner predicts {self.plan.verdict}: pick a plan that fits (ctrl+b loads the best)",
                severity="error",
                timeout=6,
            )
            return
        what = self.what
        if what is not None and what.machine.needs_reboot:
            self.notify(
                "a BIOS change cannot be relaunched: apply it, reboot, then check with "
                "`numatop-llm relaunch --pid N " + machineplan.cli_words(what) + "` (prints the steps)",
                severity="warning",
                timeout=10,
            )
            return
        if what is not None and what.launch is not None and (what.launch.numactl or what.launch.visible_nodes):
            self.dismiss((self.config, list(what.launch.numactl), what.launch.env()))
            return
        self.dismiss(self.config)

    def action_machine(self) -> None:
        """Focus the machine options (nodes per socket first), when they are offered."""
        if self.machine_options:
            self.query_one("#nps", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)


def _cpus(cpus: tuple[int, ...]) -> str:
    from numatop_llm.probes.cpulist import format_cpulist

    text = format_cpulist(cpus) or "-"
    return text if len(text) <= 14 else text[:13] + "…"
