"""The findings panel: plain sentences with numbers, most severe first."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from numatop_llm.monitor.diagnoses import Finding
from numatop_llm.widgets.palette import SEVERITY_MARK, SEVERITY_STYLE


class Diagnoses(Static):
    """Shows findings; with none, says that all looks well (or why nothing can be said yet)."""

    DEFAULT_CSS = """
    Diagnoses { height: auto; padding: 0 1; }
    """

    def show(self, findings: Sequence[Finding], empty: str = "no findings: every rank fits its node") -> None:
        self.findings = list(findings)
        if not findings:
            self._set(Text("✓ " + empty, style="green"))
            return
        text = Text()
        for i, f in enumerate(findings):
            if i:
                text.append("\n")
            text.append(f"{SEVERITY_MARK[f.severity]} ", style=SEVERITY_STYLE[f.severity])
            text.append(f.text, style="bold" if f.severity == "critical" else "")
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
