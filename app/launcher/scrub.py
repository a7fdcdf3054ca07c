"""Last line of defence for secrets: replace known secret values in any text we print or journal.

``numatop_llm.probes.secrets`` masks by name (``HF_TOKEN``, ``--api-key``); an engine's log tail or an error
message may still echo the value itself (vLLM logs its non-default arguments, ``api_key``
included). A :class:`Scrubber` knows the values and removes them wherever they appear.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from numatop_llm.probes.secrets import MASK

#: values shorter than this are not scrubbed (they would mangle ordinary text)
MIN_SECRET_LEN = 4


class Scrubber:
    """Replaces every known secret value by ``****`` in strings and nested JSON-like data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN}, key=len, reverse=True)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if s and len(s) >= MIN_SECRET_LEN}
        self._secrets = sorted(merged, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every secret value masked."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` (dicts, lists, strings) with secrets masked in every string."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value
