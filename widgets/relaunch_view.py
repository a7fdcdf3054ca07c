"""Progress of a relaunch: one line per step with its status, time and message."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

MARK = {"running": ("…", "yellow"), "ok": ("✓", "green"), "failed": ("✖", "bold red"), "skipped": ("-", "dim")}


class RelaunchScreen(ModalScreen[None]):
    """Shows the steps of a relaunch as they happen (fed by the app from the launcher's callback)."""

    BINDINGS = [Binding("escape,enter", "close", "close")]
    DEFAULT_CSS = """
    RelaunchScreen { align: center middle; }
    RelaunchScreen > VerticalScroll { width: 90%; max-width: 110; height: 80%; border: round $accent;
        background: $panel; padding: 0 1; }
    """

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title
        self.steps: dict[str, tuple[str, str, float | None]] = {}
        self.result: Text | None = None
        self.done = False

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="body")

    def on_mount(self) -> None:
        self._redraw()

    def step(self, name: str, status: str, message: str = "", seconds: float | None = None) -> None:
        self.steps[name] = (status, message, seconds)
        self._redraw()

    def finish(self, ok: bool, message: str, log_tail: str = "") -> None:
        self.done = True
        t = Text("\n" + ("✓ " if ok else "✖ ") + message, style="bold green" if ok else "bold red")
        if log_tail:
            t.append("\n\nlog tail:\n" + log_tail, style="dim")
        t.append("\n\nEsc or Enter closes", style="dim")
        self.result = t
        self._redraw()

    def _redraw(self) -> None:
        text = Text(self.title_text + "\n\n", style="bold")
        for name, (status, message, seconds) in self.steps.items():
            mark, style = MARK.get(status, ("?", ""))
            text.append(f" {mark} ", style=style)
            text.append(f"{name:<10}", style="bold")
            if seconds is not None:
                text.append(f"{seconds:6.1f} s  ", style="dim")
            text.append(message + "\n")
        if self.result is not None:
            text.append_text(self.result)
        try:
            self.query_one("#body", Static).update(text)
        except Exception:
            pass

    def action_close(self) -> None:
        if self.done:
            self.dismiss(None)
        else:
            self.notify("the relaunch is still running; it rolls back by itself if the new engine fails")
