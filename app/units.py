"""Byte units and how the product writes them: one place, so every view says the same thing."""

from __future__ import annotations

KIB = 2**10
MIB = 2**20
GIB = 2**30


def gib(n: float | None, digits: int = 1) -> str:
    """``12.3 GiB`` (``?`` when unknown): for sentences — findings, plans, explanations."""
    return "?" if n is None else f"{n / GIB:.{digits}f} GiB"


def gib_short(n: float | None, digits: int = 1) -> str:
    """``12.3G`` (``?`` when unknown): for tight columns and bars."""
    return "?" if n is None else f"{n / GIB:.{digits}f}G"


def gib_number(n: float, digits: int = 1) -> str:
    """``12.3``: for tables whose header says GiB."""
    return f"{n / GIB:.{digits}f}"
