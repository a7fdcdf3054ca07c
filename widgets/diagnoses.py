"""The findings panel: plain sentences with numbers, most severe first."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from numatop_llm.monitor.diagnoses import Finding, Severity
from numatop_llm.widgets.palette import SEVERITY_MARK


class Diagnoses(Static):
    """Shows findings; with none, says that all looks well (or why nothing can be said yet).

    Colours come from the theme (component classes over ``$error``, ``$warning``, ``$success``),
    so a theme changes them; every severity also has its own mark, for ``NO_COLOR``.
    """

    COMPONENT_CLASSES = {
        "diagnoses--critical",
        "diagnoses--critical-text",
        "diagnoses--warning",
        "diagnoses--info",
        "diagnoses--clear",
    }
    DEFAULT_CSS = """
    Diagnoses { height: auto; padding: 0 1; }
    Diagnoses > .diagnoses--critical { color: $text-error; text-style: bold; }
    Diagnoses > .diagnoses--critical-text { text-style: bold; }
    Diagnoses > .diagnoses--warning { color: $text-warning; }
    Diagnoses > .diagnoses--info { color: $text-muted; }
    Diagnoses > .diagnoses--clear { color: $text-success; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "theme", lambda _theme: self.call_after_refresh(self._restyle), init=False)

    def _restyle(self) -> None:
        self._last = None
        self.show(getattr(self, "findings", []), getattr(self, "_empty", ""))

    def show(self, findings: Sequence[Finding], empty: str = "no findings: every rank fits its node") -> None:
        self.findings = list(findings)
        self._empty = empty
        if not findings:
            self._set(Text("✓ " + empty, style=self.get_component_rich_style("diagnoses--clear")))
            return
        text = Text()
        bold = self.get_component_rich_style("diagnoses--critical-text")
        for i, f in enumerate(findings):
            if i:
                text.append("\n")
            mark = self.get_component_rich_style(f"diagnoses--{f.severity}")
            text.append(f"{SEVERITY_MARK[f.severity]} ", style=mark)
            text.append(f.text, style=bold if f.severity == Severity.CRITICAL else "")
        self._set(text)

    def _set(self, text: Text) -> None:
        """Update only when the findings changed; re-layout only when their line count did."""
        last: Text | None = getattr(self, "_last", None)
        if last == text:
            return
        self._last = text
        # same length and lines: it wraps the same, its height cannot change
        same = (
            last is not None and len(last.plain) == len(text.plain) and last.plain.count("\n") == text.plain.count("\n")
        )
        self.update(text, layout=not same)
