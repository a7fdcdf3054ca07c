"""The Textual dashboard: one app class over the monitoring core.

Data flows one way: a :class:`~numatop_llm.monitor.ticker.Ticker` thread asks the
:class:`~numatop_llm.monitor.session.MonitorSession` for a sample (never on the UI thread), posts a
``SampleArrived`` message, the app updates ``AppState`` and hands the widgets what they render.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from numatop_llm.dashboard.messages import ReplayEnded, SampleArrived, SourceFailed
from numatop_llm.dashboard.screens import EnginePicker
from numatop_llm.monitor.planbridge import EnginePlanner
from numatop_llm.monitor.session import MonitorSession
from numatop_llm.monitor.sources import Source
from numatop_llm.monitor.state import AppState, clock
from numatop_llm.monitor.ticker import Ticker
from numatop_llm.probes.models import Engine, Snapshot
from numatop_llm.probes.textio import is_denied
from numatop_llm.recording import Recorder
from numatop_llm.units import gib_short
from numatop_llm.widgets.diagnoses import Diagnoses
from numatop_llm.widgets.help import HelpScreen
from numatop_llm.widgets.memory_history import MemoryHistory
from numatop_llm.widgets.node_memory import NodeMemory
from numatop_llm.widgets.numa_map import NumaMap
from numatop_llm.widgets.processes import ProcessTable, ThreadTable
from numatop_llm.widgets.relaunch_view import RelaunchScreen

if TYPE_CHECKING:  # pragma: no cover
    from numatop_llm.launcher import Step
    from numatop_llm.planner import PlanConfig

INTERVALS = (0.5, 1.0, 2.0, 5.0, 10.0)


def _set(widget: Static, text: Text) -> None:
    """Update a one- or two-line Static: skip an unchanged text, re-layout only when its line count changes."""
    last: Text | None = getattr(widget, "_numatop_last", None)
    if last == text:
        return
    widget._numatop_last = text  # type: ignore[attr-defined]
    # same text length, same lines: it wraps the same, so its height cannot change
    widget.update(
        text,
        layout=last is None or len(last.plain) != len(text.plain) or last.plain.count("\n") != text.plain.count("\n"),
    )


class NumatopApp(App[None]):
    """numatop-llm: the NUMA map, node memory, processes/threads, diagnoses and the what-if editor."""

    TITLE = "numatop-llm"
    #: nothing takes focus at start: the single-letter keys belong to the app, not to an input
    AUTO_FOCUS = None
    CSS_PATH = "dashboard.tcss"
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("p", "pause", "pause"),
        Binding("w", "whatif", "what-if"),
        Binding("d", "distances", "distances"),
        Binding("1", "tab('overview')", "overview", show=False),
        Binding("2", "tab('processes')", "processes", show=False),
        Binding("3", "tab('memory')", "memory", show=False),
        Binding("plus,equals_sign", "slower", "slower", show=False),
        Binding("minus", "faster", "faster", show=False),
        Binding("r", "rediscover", "rediscover", show=False),
        Binding("s", "sort", "sort", show=False),
        Binding("slash", "filter", "filter", show=False),
        Binding("D", "demo", "demo", show=False),
        Binding("L", "live", "live", show=False),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(
        self,
        source: Source,
        *,
        interval: float = 1.0,
        recorder: Recorder | None = None,
        first_note: str | None = None,
        plan_every: float = 30.0,
        offer_live: bool = False,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.recorder = recorder
        self.state = AppState()
        self.bridge = EnginePlanner(every=plan_every)
        self.note = first_note
        self.paused = False
        self.replay_done = False
        self.filter_text = ""
        self.relaunching = False
        self.session = MonitorSession(source, planner=self.bridge, remember=source.live)
        self.ticker: Ticker | None = None
        #: bumped at every change of source: samples of an older session are dropped on arrival
        self.generation = 0
        self.first_frame_at: float | None = None
        #: say on the status line that L switches to this machine (a demo or replay started by the user)
        self.offer_live = offer_live

    @property
    def source(self) -> Source:
        return self.session.source

    # -- layout ----------------------------------------------------------------------------

    @property
    def main(self):
        """The dashboard's own screen (samples keep updating it while a dialog or the editor is open)."""
        return self.screen_stack[0]

    def compose(self) -> ComposeResult:
        yield Static(id="info")
        yield Static(id="status")
        with TabbedContent(initial="overview"):
            with TabPane("1 Overview", id="overview"), VerticalScroll():
                with Horizontal(id="overview-top"):
                    with Vertical(classes="box", id="map-box") as v:
                        v.border_title = "NUMA map"
                        yield NumaMap(id="map")
                    with Vertical(classes="box", id="mem-box") as v:
                        v.border_title = "Node memory"
                        yield NodeMemory(id="mem")
                with Vertical(classes="box", id="diagnoses-box") as v:
                    v.border_title = "Diagnoses"
                    yield Diagnoses(id="diagnoses")
            with TabPane("2 Processes", id="processes"), Vertical():
                yield ProcessTable(id="procs")
                yield ThreadTable(id="threads")
            with TabPane("3 Memory", id="memory"), Vertical():
                yield MemoryHistory(id="history")
                yield Static(id="engine-bytes")
        yield Input(placeholder="filter processes and threads (Esc clears)", id="filter", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.main.query_one("#info", Static).update(Text("numatop-llm — reading the machine…", style="bold"))
        self._status()
        if self.source.live and len(self.source.candidates) > 1:
            self.push_screen(EnginePicker(self.source.candidates), self._engine_picked)
        self._start_sampling()

    # -- sampling: the monitoring core on its own thread ----------------------------------------

    def _start_sampling(self) -> None:
        """Start a ticker for the current session (the previous one must be stopped)."""
        session, generation = self.session, self.generation

        def tick(late: float) -> float | None:
            try:
                sample = session.sample(late)
            except Exception as exc:
                self.post_message(SourceFailed(f"sampling failed: {type(exc).__name__}: {exc}"))
                return self.interval
            if sample is None:
                self.post_message(ReplayEnded(generation))
                return None
            self.post_message(SampleArrived(sample, generation, session.source.live))
            return session.source.pace(self.interval)

        self.ticker = Ticker(tick, self.interval)
        self.ticker.paused = self.paused
        self.ticker.start()

    def switch_source(self, source: Source) -> None:
        """Watch ``source`` from now on: the old sampler thread is stopped and joined first."""
        if self.ticker is not None:
            self.ticker.stop()
        self.session.close()
        self.generation += 1
        self.session = MonitorSession(source, planner=self.bridge, remember=source.live)
        self.state = AppState()
        self.replay_done = False
        self.note = None
        self.offer_live = not source.live
        self._start_sampling()

    def on_unmount(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        if self.recorder is not None:
            self.recorder.close()
        try:
            self.session.close()
        except Exception:
            pass

    @on(SampleArrived)
    def _sample(self, msg: SampleArrived) -> None:
        if msg.generation != self.generation:
            return
        sample = msg.sample
        self.state.update(sample)
        if self.recorder is not None:
            try:
                self.recorder.write(sample.snapshot)
            except OSError as exc:
                self.notify(f"recording stopped: {exc}", severity="error")
                self.recorder = None
        if sample.candidates is not None:
            found = list(sample.candidates)
            if len(found) > 1:
                self.push_screen(EnginePicker(found), self._engine_picked)
            self.notify(
                f"{len(found)} vLLM engine(s) found" + (f": attached to {sample.attached_pid}" if found else "")
            )
        self.render_state()
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()

    @on(ReplayEnded)
    def _replay_ended(self, msg: ReplayEnded) -> None:
        if msg.generation != self.generation:
            return
        self.replay_done = True
        self._status()

    @on(SourceFailed)
    def _failed(self, msg: SourceFailed) -> None:
        self.notify(msg.reason, severity="error", timeout=8)

    # -- rendering -------------------------------------------------------------------------

    def render_state(self) -> None:
        st = self.state
        snap = st.latest
        if snap is None:
            return
        engine = st.engine
        _set(self.main.query_one("#info", Static), self._info_text(snap, engine))
        self._status()
        oom_nodes = {f.node for f in st.findings if f.code == "will-oom" and f.node is not None}
        self.main.query_one(NumaMap).show(snap, engine if st.engine_alive else None)
        self.main.query_one(NodeMemory).show(snap, engine if st.engine_alive else None, oom_nodes)
        empty = "no findings" if engine is not None else "no engine attached: the machine's nodes are shown"
        self.main.query_one(Diagnoses).show(st.findings, empty=empty)
        active = self.main.query_one(TabbedContent).active
        if active == "processes":
            self._render_processes()
        elif active == "memory":
            self._render_memory()

    def _render_processes(self) -> None:
        self.main.query_one(ProcessTable).show(self.state.engine, self.filter_text)
        self._render_threads()

    def _render_threads(self) -> None:
        """The thread table follows the highlighted process (the busiest worker at first)."""
        engine = self.state.engine
        pid = self.main.query_one(ProcessTable).selected_pid()
        proc = None
        if engine is not None:
            proc = next((p for p in engine.processes if p.pid == pid), None) or (
                max(engine.workers(), key=lambda p: len(p.threads), default=None)
            )
        tt = self.main.query_one(ThreadTable)
        tt.show(proc, self.filter_text)
        tt.border_title = f"threads of {proc.label or proc.comm} ({proc.pid})" if proc else "threads"

    def _render_memory(self) -> None:
        st = self.state
        snap = st.latest
        if snap is None:
            return
        totals = {n.id: n.memory.total_bytes for n in snap.topology.nodes if n.memory}
        self.main.query_one(MemoryHistory).show(list(st.history), totals)
        engine = st.engine
        text = Text()
        if engine is not None:
            text.append("engine bytes by node: ", style="bold")
            for p in engine.processes:
                if not p.node_bytes:
                    continue
                parts = " ".join(f"n{n}:{gib_short(b)}" for n, b in sorted(p.node_bytes.items()) if b)
                text.append(f"\n  {p.display_name:<14} {p.policy.text:<12} {parts}")
        self.main.query_one("#engine-bytes", Static).update(text)

    def _info_text(self, snap: Snapshot, engine: Engine | None) -> Text:
        topo = snap.topology
        t = Text()
        t.append("numatop-llm ", style="bold")
        t.append(f"{snap.host} {snap.kernel}", style="cyan")
        sockets = len(topo.packages) or 1
        t.append(f" · {len(topo.nodes)} nodes {len(topo.cpus_online)} CPUs {sockets} sockets")
        if engine is not None:
            c = engine.config
            model = (c.served_name or (c.model or "?").rstrip("/").rsplit("/", 1)[-1])[:32]
            kv = "unset" if c.kv_cache_gib is None else f"{c.kv_cache_gib:g}G"
            t.append(f"\nengine {engine.root_pid} ", style="bold")
            t.append(model, style="bold magenta")
            t.append(
                f" TP{c.tensor_parallel_size} PP{c.pipeline_parallel_size} bind {c.omp_threads_bind or 'unset'} KV {kv}"
            )
            if c.vllm_version:
                t.append(f" vLLM {c.vllm_version}", style="dim")
        return t

    def _status(self) -> None:
        st = self.state
        status = self.main.query_one("#status", Static)
        parts: list[tuple[str, str]] = []
        alert = False
        src = self.source.label
        if st.exit is not None:
            parts.append((st.exit.headline + " — last snapshot shown; r re-discovers", "bold"))
            alert = True
        elif st.latest is not None and st.latest.engine is None and self.source.live:
            lost = self.source.lost_pid
            if lost:
                parts.append((f"process {lost} exited — r re-discovers", "bold"))
                alert = True
            else:
                parts.append(("no vLLM engine running here — r looks again, D opens the demo", "yellow"))
        if not self.source.live and self.offer_live:
            parts.append(("L watches this machine", "yellow"))
        if self.paused:
            parts.append(("PAUSED (p resumes)", "bold yellow"))
        if self.replay_done:
            parts.append(("replay ended", "bold"))
        if st.latest is not None:
            s = st.latest
            when = clock(s.taken_at)
            parts.append((f"{src} {when} every {self.interval:g}s · sample {1000 * s.sample_seconds:.0f} ms", "dim"))
            if s.late_seconds:
                parts.append((f"late {s.late_seconds:.1f}s", "yellow"))
            denied = sum(1 for d in s.degraded if is_denied(d))
            if denied:
                parts.append((f"{denied} files unreadable (not root?)", "yellow"))
        if self.note:
            parts.append((self.note, "dim italic"))
        text = Text()
        for i, (p, style) in enumerate(parts):
            if i:
                text.append(" · ", style="dim")
            text.append(p, style=style)
        _set(status, text)
        status.set_class(alert, "alert")

    # -- actions ---------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        self.paused = not self.paused
        if self.ticker is not None:
            self.ticker.paused = self.paused
            self.ticker.wake()
        self._status()

    def _set_interval(self, interval: float) -> None:
        self.interval = interval
        if self.ticker is not None:
            self.ticker.interval = interval
            self.ticker.wake()
        self._status()

    def action_slower(self) -> None:
        bigger = [i for i in INTERVALS if i > self.interval]
        self._set_interval(bigger[0] if bigger else self.interval)

    def action_faster(self) -> None:
        smaller = [i for i in INTERVALS if i < self.interval]
        self._set_interval(smaller[-1] if smaller else self.interval)

    def action_distances(self) -> None:
        m = self.main.query_one(NumaMap)
        m.show_distances = not m.show_distances
        self.main.query_one("#map-box").border_title = "NUMA distances" if m.show_distances else "NUMA map"
        self.action_tab("overview")

    def action_tab(self, tab: str) -> None:
        self.main.query_one(TabbedContent).active = tab
        self.render_state()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self.render_state()
        if event.pane.id == "processes" and not self.main.query_one("#filter", Input).has_focus:
            self.main.query_one(ProcessTable).focus()
        elif event.pane.id != "processes":
            self.set_focus(None)

    @on(DataTable.RowHighlighted, "#procs")
    def _proc_moved(self) -> None:
        self._render_threads()

    def action_sort(self) -> None:
        tt = self.main.query_one(ThreadTable)
        keys = ["CPU%", "TID", "CPU", "node"]
        tt.sort_key = keys[(keys.index(getattr(tt, "sort_key", "CPU%")) + 1) % len(keys)]
        self.notify(f"threads sorted by {tt.sort_key}", timeout=2)
        self.action_tab("processes")

    def action_filter(self) -> None:
        box = self.main.query_one("#filter", Input)
        box.disabled = False
        box.add_class("visible")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        if self.main.query_one(TabbedContent).active != "processes":
            self.main.query_one(TabbedContent).active = "processes"
        self._render_processes()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.main.query_one("#procs").focus()

    def action_clear_filter(self) -> None:
        box = self.main.query_one("#filter", Input)
        box.value = ""
        box.remove_class("visible")
        box.disabled = True
        self.filter_text = ""
        self._render_processes()

    def action_rediscover(self) -> None:
        if not self.source.live:
            self.notify("a replay cannot re-discover; run numatop-llm without --demo to watch this machine")
            return
        self.state.exit = None
        # /proc is scanned on the sampler's thread; the next sample carries what was found
        self.session.request_rediscover()
        if self.ticker is not None:
            self.ticker.wake()

    def _engine_picked(self, pid: int | None) -> None:
        self.source.attach(pid)
        if self.ticker is not None:
            self.ticker.wake()

    def action_demo(self) -> None:
        from numatop_llm.monitor.sources import demo_source

        self.switch_source(demo_source())

    def action_live(self) -> None:
        from numatop_llm.monitor.sources import LiveSource

        if self.source.live:
            return
        self.switch_source(LiveSource(discover=False))
        self.session.request_rediscover()

    # -- what-if and relaunch --------------------------------------------------------------

    def action_whatif(self) -> None:
        from numatop_llm.widgets.whatif import WhatIfScreen

        st = self.state
        engine = st.engine
        snap = st.last_engine or st.latest
        if engine is None or snap is None:
            self.notify("no engine to plan for: attach to one (r) or open the demo (D)", severity="warning")
            return
        try:
            import numatop_llm.planner as planner
            from numatop_llm.monitor.planbridge import model_path

            path = model_path(engine)
            if path is None:
                raise ValueError("the engine's model path is unknown")
            model = self.bridge.load(path)
        except Exception as exc:
            self.notify(f"cannot plan: {exc}", severity="error", timeout=8)
            return
        base = planner.config_from_engine(engine.config)
        start = base
        current = planner.make_plan(model, snap.topology, base, engine=engine)
        if not current.fits:
            try:
                best = planner.solve(model, snap.topology, base, limit=1, engine=engine)
                if best:
                    start = best[0].config
            except Exception:
                pass
        live = self.source.live and st.engine_alive
        why = (
            "" if live else "this is a recording: nothing to relaunch here (numatop-llm relaunch --pid N on the server)"
        )
        self.push_screen(
            WhatIfScreen(
                model,
                snap.topology,
                base,
                start=start,
                preview=lambda cfg: self._preview(engine, base, cfg),
                can_relaunch=live,
                why_not=why,
                engine=engine,
                machine_options=True,
            ),
            self._whatif_done,
        )

    def _preview(self, engine: Engine, base: PlanConfig, cfg: PlanConfig) -> list[str]:
        """What the relaunch would change, from the configuration alone (no /proc read here)."""
        out = []
        for name, a, b in (
            ("--tensor-parallel-size", base.tp, cfg.tp),
            ("--pipeline-parallel-size", base.pp, cfg.pp),
            ("VLLM_CPU_OMP_THREADS_BIND", base.bind, cfg.bind),
            ("VLLM_CPU_KVCACHE_SPACE", base.kv_gib, cfg.kv_gib),
            ("VLLM_CPU_NUM_OF_RESERVED_CPU", base.reserved_cpus, cfg.reserved_cpus),
        ):
            if a != b:
                out.append(f"{name}: {'unset' if a is None else a} → {'unset' if b is None else b}")
        if out:
            out.append(
                f"engine {engine.root_pid} is drained, stopped, started with this, verified; rolled back on failure"
            )
        return out

    def _whatif_done(self, result: PlanConfig | tuple[PlanConfig, list[str], dict[str, str]] | None) -> None:
        if result is None or self.state.engine is None:
            return
        # (config, numactl options, env) when the what-if changes the launch line (issue #17)
        cfg, numactl, env = result if isinstance(result, tuple) else (result, None, None)
        pid = self.state.engine.root_pid
        launch = f" under numactl {' '.join(numactl)}" if numactl else ""
        screen = RelaunchScreen(f"Relaunching engine {pid} with {cfg.summary()}{launch}")
        self.push_screen(screen)
        self.relaunch(pid, cfg, screen, numactl, env)

    @work(thread=True, exclusive=True, group="relaunch", exit_on_error=False)
    def relaunch(
        self,
        pid: int,
        cfg: PlanConfig,
        screen: RelaunchScreen,
        numactl: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        def ui(fn, *a) -> None:
            self.call_from_thread(fn, *a)

        try:
            from numatop_llm.launcher import CaptureError, Relaunch, capture

            try:
                old = capture(pid)
            except CaptureError as exc:
                ui(screen.finish, False, str(exc))
                return
            new = old.with_plan(cfg, numactl_prefix=numactl)
            if env:
                new = new.with_changes(env=env)
            plan = None
            snap = self.state.last_engine
            if snap is not None and snap.engine is not None:
                import numatop_llm.planner as planner
                from numatop_llm.monitor.planbridge import model_path

                path = model_path(snap.engine)
                if path:
                    plan = planner.make_plan(self.bridge.load(path), snap.topology, cfg, engine=snap.engine)
            self.relaunching = True

            def on_step(step: Step) -> None:
                msg = step.message
                if step.countdown is not None:
                    msg = f"{msg} ({step.countdown:.0f} s left)"
                ui(screen.step, step.name, step.status, msg, step.seconds)

            outcome = Relaunch(old, new, on_step=on_step, plan=plan).run()
            if outcome.new_pid:
                self.source.attach(outcome.new_pid)
                if self.ticker is not None:
                    self.ticker.wake()
            ui(screen.finish, outcome.ok, outcome.message, "" if outcome.ok else outcome.log_tail)
        except Exception as exc:
            ui(screen.finish, False, f"relaunch failed: {type(exc).__name__}: {exc}")
        finally:
            self.relaunching = False
