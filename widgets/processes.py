"""The engine tree and the threads of one process, as sortable, filterable tables (htop-like)."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import DataTable

from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import Engine, Process, Role, Thread
from numatop_llm.units import gib_short as gib
from numatop_llm.widgets.palette import proc_colour

ROLE_ORDER = {Role.API_SERVER: 0, Role.ENGINE_CORE: 1, Role.WORKER: 2, Role.OTHER: 3}


def node_split(p: Process, top: int = 2) -> str:
    items = sorted(p.node_bytes.items(), key=lambda kv: -kv[1])
    parts = [f"n{n}:{gib(b)}" for n, b in items[:top] if b > 0]
    if len(items) > top:
        parts.append(f"+{len(items) - top}")
    return " ".join(parts) or "-"


def _keep_cursor(table: DataTable, fill: Callable[[], None]) -> None:
    key = None
    if table.row_count and table.cursor_row is not None and table.cursor_row < table.row_count:
        try:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except Exception:
            key = None
    table.clear()
    fill()
    if key is not None:
        try:
            table.move_cursor(row=table.get_row_index(key), animate=False)
        except Exception:
            pass


class ProcessTable(DataTable):
    """One row per process of the engine tree: role, RSS, memory per node, policy, threads."""

    COLUMNS = ("PID", "process", "RSS", "memory by node", "policy", "thr", "off", "CPU%")

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*self.COLUMNS)

    def show(self, engine: Engine | None, filter_text: str = "") -> None:
        def fill() -> None:
            if engine is None:
                return
            procs = sorted(engine.processes, key=lambda p: (ROLE_ORDER[p.role], p.rank or 0, p.pid))
            for p in procs:
                name = p.display_name
                if filter_text and filter_text.lower() not in f"{p.pid} {name} {p.comm}".lower():
                    continue
                # "off node" means something only for a process that belongs on a node: a worker or a bind
                placed = p.role == Role.WORKER or p.policy.strict
                off = p.off_node_threads if placed else None
                cpu = sum(t.cpu_percent or 0.0 for t in p.threads)
                remote = p.remote_bytes if placed else 0
                mem = Text(node_split(p), style="yellow" if remote > 0.05 * max(1, p.rss_bytes) else "")
                self.add_row(
                    str(p.pid),
                    Text(name, style=f"bold {proc_colour(p)}"),
                    gib(p.rss_bytes),
                    mem,
                    Text(p.policy.text, style="bold" if p.policy.strict else "dim"),
                    str(len(p.threads)),
                    Text("-" if off is None else str(off), style="bold red" if off else "dim"),
                    f"{cpu:.0f}",
                    key=str(p.pid),
                )

        _keep_cursor(self, fill)

    def selected_pid(self) -> int | None:
        if not self.row_count or self.cursor_row is None:
            return None
        try:
            return int(self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value or 0) or None
        except Exception:
            return None


THREAD_SORTS: dict[str, Callable[[Thread], object]] = {
    "CPU%": lambda t: -(t.cpu_percent or 0.0),
    "TID": lambda t: t.tid,
    "CPU": lambda t: (t.cpu is None, t.cpu or 0),
    "node": lambda t: (t.node is None, t.node or 0, t.cpu or 0),
}


class ThreadTable(DataTable):
    """The threads of one process: where each runs (CPU, node), where it may run, its load.

    Threads running off the process's home node are shown in red.
    """

    COLUMNS = ("TID", "comm", "S", "CPU", "node", "allowed CPUs", "CPU%")

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*self.COLUMNS)
        self.sort_key = "CPU%"

    def show(self, proc: Process | None, filter_text: str = "") -> None:
        def fill() -> None:
            if proc is None:
                return
            home = proc.home_node
            key = THREAD_SORTS.get(getattr(self, "sort_key", "CPU%"), THREAD_SORTS["CPU%"])
            for t in sorted(proc.threads, key=key):
                text = f"{t.tid} {t.comm} cpu{t.cpu} n{t.node}"
                if filter_text and filter_text.lower() not in text.lower():
                    continue
                off = home is not None and t.node is not None and t.node != home
                style = "bold red" if off else ""
                self.add_row(
                    Text(str(t.tid), style=style),
                    Text(t.comm, style=style),
                    t.state,
                    Text("-" if t.cpu is None else str(t.cpu), style=style),
                    Text("-" if t.node is None else str(t.node), style=style),
                    format_cpulist(t.allowed_cpus) or "-",
                    "-" if t.cpu_percent is None else f"{t.cpu_percent:.0f}",
                    key=str(t.tid),
                )

        _keep_cursor(self, fill)
