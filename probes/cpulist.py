"""Linux CPU/node list formats: ``0-3,8,10-11`` lists and ``0000ffff,00000001`` hex masks."""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpulist(text: str) -> list[int]:
    """Parse a kernel list such as ``0-3,8,10-11`` (also ``0-7:2`` strides) into sorted ints.

    Raises ValueError on garbage; an empty string is an empty list.
    """
    text = text.replace("\x00", "").strip()
    out: set[int] = set()
    if not text:
        return []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        stride = 1
        if ":" in part:
            part, s = part.split(":", 1)
            stride = int(s)
            if stride <= 0:
                raise ValueError(f"bad stride in {text!r}")
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = int(a), int(b)
            if lo < 0 or hi < lo or hi - lo > 1 << 16:
                raise ValueError(f"bad range {part!r}")
            out.update(range(lo, hi + 1, stride))
        else:
            v = int(part)
            if v < 0:
                raise ValueError(f"negative id in {text!r}")
            out.add(v)
    return sorted(out)


def parse_cpumask(text: str) -> list[int]:
    """Parse a hex mask as in ``cpumap`` (comma-separated 32-bit words, most significant first)."""
    text = text.replace("\x00", "").strip().replace(",", "")
    if not text:
        return []
    value = int(text, 16)
    out = []
    bit = 0
    while value:
        if value & 1:
            out.append(bit)
        value >>= 1
        bit += 1
    return out


def format_cpulist(ids: Iterable[int]) -> str:
    """Format ints as a compact kernel-style list (``0-3,8``)."""
    s = sorted(set(ids))
    if not s:
        return ""
    parts: list[str] = []
    start = prev = s[0]
    for v in s[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = v
    parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)
