"""Small screens of the dashboard (the what-if editor, help and relaunch views live in widgets/)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from numatop_llm.probes.engine import EngineCandidate


class EnginePicker(ModalScreen[int | None]):
    """More than one engine runs: pick one (Enter), or Esc to watch the machine only."""

    BINDINGS = [Binding("escape", "dismiss_none", "machine only")]
    DEFAULT_CSS = """
    EnginePicker { align: center middle; }
    EnginePicker > Vertical { width: 80%; height: auto; max-height: 80%; border: round $accent;
        background: $panel; }
    """

    def __init__(self, candidates: list[EngineCandidate]) -> None:
        super().__init__()
        self.candidates = candidates

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text("vLLM engines running here — pick one", style="bold"))
            yield OptionList(
                *(
                    Option(f"pid {c.root_pid:<8} {c.workers} worker(s)  {c.model or '?'}", id=str(c.root_pid))
                    for c in self.candidates
                )
            )

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
