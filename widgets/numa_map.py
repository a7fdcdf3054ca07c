"""The NUMA map: sockets → nodes → CPUs, one cell per CPU, coloured by load and marked by rank."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive

from numatop_llm.probes.models import Engine, Node, Snapshot
from numatop_llm.widgets.lineview import LineView
from numatop_llm.widgets.palette import load_glyph, load_style, proc_char, proc_colour

LOAD_BG = ((85.0, "on red3"), (50.0, "on dark_orange3"), (10.0, "on grey30"), (0.0, ""))


def cpu_owners(engine: Engine | None) -> dict[int, tuple[str, str]]:
    """CPU → (char, colour) of the engine process whose threads use it most (last CPU, by CPU%)."""
    if engine is None:
        return {}
    weight: dict[int, dict[int, tuple[float, str, str]]] = {}
    for p in engine.processes:
        ch, colour = proc_char(p), proc_colour(p)
        for t in p.threads:
            if t.cpu is None:
                continue
            slot = weight.setdefault(t.cpu, {})
            w, _, _ = slot.get(p.pid, (0.0, ch, colour))
            slot[p.pid] = (w + (t.cpu_percent or 0.0) + 0.01, ch, colour)
    return {cpu: max(slot.values())[1:] for cpu, slot in weight.items()}


def node_fill(node: Node) -> float | None:
    m = node.memory
    if m is None or m.total_bytes <= 0:
        return None
    return 100.0 * (m.total_bytes - m.free_bytes) / m.total_bytes


class NumaMap(LineView):
    """Sockets, their nodes and each node's CPUs. ``d`` (bound by the app) toggles the distance table.

    A cell is the rank character (``0``… for workers, ``E`` engine core, ``A`` API server) when
    an engine thread last ran there, else a load glyph (``·▁▂…█``); its background shows load.
    When a node has more CPUs than the width allows, one cell stands for several CPUs (compact).
    """

    DEFAULT_CSS = """
    NumaMap { height: auto; min-height: 3; padding: 0 1; }
    """

    show_distances: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: Snapshot | None = None
        self.engine: Engine | None = None

    def show(self, snapshot: Snapshot | None, engine: Engine | None) -> None:
        """Render this snapshot (``engine`` may be the last one seen after it exited).

        Nothing is redrawn when the picture did not change, and the layout is only recomputed
        when the number of lines did: at 1 Hz most samples change a few cells at most.
        """
        self.snapshot, self.engine = snapshot, engine
        self.update_lines()

    def watch_show_distances(self) -> None:
        self.update_lines()

    def compute_lines(self, width: int) -> list[Text]:
        return self._lines(max(10, width))

    # -- drawing -------------------------------------------------------------------------

    def _lines(self, width: int) -> list[Text]:
        snap = self.snapshot
        if snap is None:
            return [Text("waiting for the first sample…", style="grey50")]
        topo = snap.topology
        if not topo.nodes:
            cpus = len(topo.cpus_online)
            return [Text(f"no NUMA nodes in sysfs: one memory domain, {cpus} CPUs", style="yellow")]
        if self.show_distances:
            return self._distance_lines()
        owners = cpu_owners(self.engine)
        busy = snap.cpu_busy
        label_w = max(3, 1 + len(str(max(topo.node_ids))))
        suffix_w = 6
        cells_w = max(4, width - label_w - 1 - suffix_w)
        most = max((len(n.cpulist_all or n.cpus) for n in topo.nodes), default=1)
        per_cell = max(1, math.ceil(most / cells_w))
        lines: list[Text] = []
        packages = topo.packages or ()
        by_pkg: dict[int | None, list[Node]] = {}
        for n in topo.nodes:
            by_pkg.setdefault(n.package, []).append(n)
        multi = len(by_pkg) > 1 or bool(packages)
        for pkg in sorted(by_pkg, key=lambda k: (k is None, k or 0)):
            nodes = by_pkg[pkg]
            if multi:
                title = f"socket {pkg}" if pkg is not None else "no CPUs"
                extra = f"  (1 cell = {per_cell} CPUs)" if per_cell > 1 and not lines else ""
                lines.append(Text(title + extra, style="bold grey58"))
            for n in sorted(nodes, key=lambda x: x.id):
                lines.append(self._node_line(n, label_w, per_cell, owners, busy, cells_w, most))
        if per_cell > 1 and not multi:
            lines.insert(0, Text(f"(1 cell = {per_cell} CPUs)", style="grey50"))
        return lines

    def _node_line(
        self,
        n: Node,
        label_w: int,
        per_cell: int,
        owners: dict[int, tuple[str, str]],
        busy: dict[int, float],
        cells_w: int,
        most: int,
    ) -> Text:
        line = Text(f"n{n.id}".ljust(label_w) + " ", style="bold")
        cpus = list(n.cpulist_all or n.cpus)
        online = set(n.cpus)
        if not cpus:
            line.append("(memory only)".ljust(cells_w), style="italic grey50")
        else:
            # cells with the same style are appended as one run: far fewer spans to paint
            run, run_style = "", ""
            for i in range(0, len(cpus), per_cell):
                group = cpus[i : i + per_cell]
                live = [c for c in group if c in online]
                if not live:
                    ch, style = "×", "grey35"
                else:
                    loads = [busy[c] for c in live if c in busy]
                    load = max(loads) if loads else None
                    owner = next((owners[c] for c in live if c in owners), None)
                    if owner is not None:
                        bg = next((b for lim, b in LOAD_BG if load is not None and load >= lim), "")
                        ch, style = owner[0], f"bold {owner[1]} {bg}".strip()
                    else:
                        ch, style = load_glyph(load), load_style(load)
                if style != run_style and run:
                    line.append(run, style=run_style)
                    run = ""
                run, run_style = run + ch, style
            if run:
                line.append(run, style=run_style)
            line.append(" " * max(0, min(cells_w, math.ceil(most / per_cell)) - math.ceil(len(cpus) / per_cell)))
        line.append(" ")
        fill = node_fill(n)
        if fill is None:
            line.append("   ? ", style="grey50")
        else:
            style = "bold red" if fill >= 95 else "yellow" if fill >= 85 else "green"
            line.append(f"{fill:4.0f}%", style=style)
        return line

    def _distance_lines(self) -> list[Text]:
        assert self.snapshot is not None
        nodes = self.snapshot.topology.nodes
        ids = [n.id for n in nodes]
        w = max(3, max(len(str(i)) for i in ids) + 2)
        head = Text("dist".ljust(5) + "".join(f"n{i}".rjust(w) for i in ids), style="bold")
        lines = [head]
        for n in nodes:
            row = Text(f"n{n.id}".ljust(5), style="bold")
            for j in ids:
                d = n.distances.get(j)
                style = "green" if d == 10 else "yellow" if d is not None and d <= 15 else "red"
                row.append(("?" if d is None else str(d)).rjust(w), style=style)
            lines.append(row)
        lines.append(Text("10 local · ≤15 same socket · >15 remote (numactl --hardware)", style="grey50"))
        return lines
