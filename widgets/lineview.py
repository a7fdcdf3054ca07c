"""A widget drawn line by line (Textual's Line API) from a list of rich ``Text`` lines.

Lines are plain rich styles painted as segments: use colours (``grey50``) rather than ``dim``,
which only Textual's own content rendering blends.

A sample at 1 Hz changes a few lines of the map or the memory bars: only those lines are turned
into strips again and only their rows are repainted, instead of the whole widget.
"""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget


class LineView(Widget):
    """Subclasses implement ``compute_lines(width)``; call ``update_lines()`` when their data changed."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._view_lines: list[Text] = []
        self._view_width = -1
        self._strips: dict[int, Strip] = {}

    def compute_lines(self, width: int) -> list[Text]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ensure(self, width: int) -> list[Text]:
        if width != self._view_width:
            self._view_lines = self.compute_lines(width)
            self._view_width = width
            self._strips.clear()
        return self._view_lines

    def update_lines(self) -> None:
        """Recompute the lines; repaint only the rows that changed (the layout only when the count did)."""
        width = self.content_size.width
        if width <= 0:
            self._view_width = -1
            self.refresh(layout=True)
            return
        new = self.compute_lines(width)
        old = self._view_lines
        if width != self._view_width or len(new) != len(old):
            self._view_lines, self._view_width = new, width
            self._strips.clear()
            self.refresh(layout=True)
            return
        changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        if not changed:
            return
        self._view_lines = new
        top = self.styles.gutter.top
        for i in changed:
            self._strips.pop(i, None)
        self.refresh(*(Region(0, top + i, self.size.width, 1) for i in changed))

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, len(self._ensure(width)))

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        lines = self._ensure(width)
        if y >= len(lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strips.get(y)
        if strip is None:
            segments = list(lines[y].render(self.app.console, end=""))
            # the widget's own style underneath: cells without a background take the widget's
            strip = Strip(segments).crop_extend(0, width, None).apply_style(self.rich_style)
            self._strips[y] = strip
        return strip
