"""Per-node memory: one bar per node split into this engine's ranks, other use and free memory."""

from __future__ import annotations

from rich.text import Text

from numatop_llm.probes.models import Engine, Role, Snapshot
from numatop_llm.units import gib_short as gib
from numatop_llm.widgets.lineview import LineView
from numatop_llm.widgets.palette import proc_char, proc_colour

NEARLY_FULL = 0.05


def engine_share(engine: Engine | None) -> dict[int, list[tuple[str, str, str, int]]]:
    """node → [(char, colour, name, bytes)] of the engine's processes, workers by rank first."""
    out: dict[int, list[tuple[str, str, str, int]]] = {}
    if engine is None:
        return out
    procs = sorted(engine.processes, key=lambda p: (p.role != Role.WORKER, p.rank or 0, p.pid))
    for p in procs:
        for node, b in p.node_bytes.items():
            if b > 0:
                out.setdefault(node, []).append((proc_char(p), proc_colour(p), p.display_name, b))
    return out


class NodeMemory(LineView):
    """A bar per node: the engine's ranks (their character and colour), other used, free.

    Marks: ``OOM`` when the planner says a strictly bound rank on the node will not fit,
    ``FULL`` when less than 5% of the node is available.
    """

    DEFAULT_CSS = """
    NodeMemory { height: auto; min-height: 3; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: Snapshot | None = None
        self.engine: Engine | None = None
        self.oom_nodes: set[int] = set()

    def show(self, snapshot: Snapshot | None, engine: Engine | None, oom_nodes: set[int] | None = None) -> None:
        self.snapshot, self.engine = snapshot, engine
        self.oom_nodes = set(oom_nodes or ())
        self.update_lines()

    def compute_lines(self, width: int) -> list[Text]:
        return self._lines(max(20, width))

    def _lines(self, width: int) -> list[Text]:
        snap = self.snapshot
        if snap is None:
            return [Text("waiting for the first sample…", style="grey50")]
        nodes = [n for n in snap.topology.nodes if n.memory is not None]
        if not nodes:
            return [Text("no per-node meminfo in sysfs", style="yellow")]
        share = engine_share(self.engine)
        label_w = max(3, 1 + len(str(max(n.id for n in nodes))))
        figures_w = 12
        mark_w = 5
        bar_w = max(6, width - label_w - 1 - figures_w - mark_w)
        lines = []
        for n in nodes:
            m = n.memory
            assert m is not None
            total = max(1, m.total_bytes)
            used = max(0, m.total_bytes - m.free_bytes)
            line = Text(f"n{n.id}".ljust(label_w) + " ", style="bold")
            cells = 0
            eng_bytes = 0
            for ch, colour, _name, b in share.get(n.id, ()):
                k = round(b / total * bar_w)
                k = min(k, bar_w - cells)
                if k > 0:
                    line.append(ch * k, style=f"bold black on {colour}")
                    cells += k
                eng_bytes += b
            other = max(0, used - eng_bytes)
            k = min(bar_w - cells, round(other / total * bar_w))
            if k > 0:
                line.append("▒" * k, style="grey62")
                cells += k
            line.append("░" * (bar_w - cells), style="grey30")
            line.append(f" {gib(used):>5}/{gib(total):<5}", style="")
            avail = m.vllm_available_bytes
            if n.id in self.oom_nodes:
                line.append(" OOM ", style="bold white on red")
            elif avail < NEARLY_FULL * total:
                line.append(" FULL", style="bold red")
            else:
                line.append("     ")
            lines.append(line)
        items: list[tuple[str, str, str]] = []
        seen = set()
        for node_items in share.values():
            for ch, colour, name, _b in node_items:
                if name not in seen:
                    seen.add(name)
                    items.append((ch, f"bold black on {colour}", name))
        items += [("▒", "grey62", "other"), ("░", "grey30", "free")]
        legend = Text()
        for ch, style, name in items:
            piece = len(name) + 3
            if legend.cell_len and legend.cell_len + piece > width:
                lines.append(legend)
                legend = Text()
            legend.append(ch, style=style)
            legend.append(f" {name}  ", style="grey50")
        lines.append(legend)
        return lines
