"""Colours and glyphs shared by the widgets: one colour and one character per vLLM rank.

Every colour is paired with a character, so the views stay readable with ``NO_COLOR`` set.
"""

from __future__ import annotations

from numatop_llm.probes.models import Process, Role

RANK_COLOURS = ("cyan", "magenta", "yellow", "green", "bright_blue", "bright_red", "bright_cyan", "bright_magenta")
RANK_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
SEVERITY_MARK = {"critical": "✖", "warning": "▲", "info": "·"}
LOAD_GLYPHS = "·▁▂▃▄▅▆▇█"


def rank_colour(rank: int | None) -> str:
    if rank is None:
        return "white"
    return RANK_COLOURS[rank % len(RANK_COLOURS)]


def rank_char(rank: int | None) -> str:
    if rank is None:
        return "?"
    return RANK_CHARS[rank % len(RANK_CHARS)]


def proc_char(p: Process) -> str:
    """The map character of a process: its rank for workers, E for the engine core, A for the API server."""
    if p.role == Role.WORKER:
        return rank_char(p.rank)
    return {Role.ENGINE_CORE: "E", Role.API_SERVER: "A"}.get(p.role, "o")


def proc_colour(p: Process) -> str:
    if p.role == Role.WORKER:
        return rank_colour(p.rank)
    return {Role.ENGINE_CORE: "bright_white", Role.API_SERVER: "white"}.get(p.role, "grey50")


def load_glyph(pct: float | None) -> str:
    if pct is None:
        return "·"
    i = min(len(LOAD_GLYPHS) - 1, round(pct / 100 * (len(LOAD_GLYPHS) - 1)))
    return LOAD_GLYPHS[i]


def load_style(pct: float | None) -> str:
    if pct is None:
        return "grey35"
    if pct >= 85:
        return "red"
    if pct >= 50:
        return "yellow"
    if pct >= 10:
        return "green"
    return "grey50"
