"""Used memory per node over the last minutes, one line per node (textual-plotext)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from textual_plotext import PlotextPlot

from numatop_llm.units import GIB


class Point(Protocol):
    at: float
    used: dict[int, int]


class MemoryHistory(PlotextPlot):
    """Used GiB of each node against seconds before now; node totals drawn as a dotted ceiling."""

    DEFAULT_CSS = """
    MemoryHistory { height: 1fr; min-height: 8; }
    """

    def show(self, history: Sequence[Point], totals: dict[int, int], nodes: Sequence[int] | None = None) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("used memory per node (GiB) — last minutes")
        plt.xlabel("seconds ago")
        if len(history) >= 1:
            now = history[-1].at
            xs = [p.at - now for p in history]
            ids = list(nodes) if nodes is not None else sorted({n for p in history for n in p.used})
            for nid in ids:
                ys = [p.used.get(nid, 0) / GIB for p in history]
                plt.plot(xs, ys, label=f"n{nid}", marker="braille")
            if totals:
                top = max(totals.values()) / GIB
                plt.hline(top, "red")
                plt.ylim(0, top * 1.05)
        self.refresh()
