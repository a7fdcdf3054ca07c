"""Small, never-raising file readers shared by the probes.

Real sysfs files can end in NUL bytes, be unreadable for non-root users, vanish while being read
(a thread exits) or be truncated. Every helper here returns ``None`` and records why, instead of
raising into the caller.
"""

from __future__ import annotations

import errno
from pathlib import Path


class Problems:
    """Collects one-line degraded reasons, without duplicates, in the order they happened."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, reason: str) -> None:
        if reason not in self.items:
            self.items.append(reason)

    def extend(self, reasons: list[str]) -> None:
        for r in reasons:
            self.add(r)


#: the words that start every "not allowed to read" reason (:func:`is_denied` recognises them)
DENIED = "permission denied"


def is_denied(reason: str) -> bool:
    """True for a degraded reason that says a file could not be read for lack of permission."""
    return f"{DENIED}: " in reason


def describe_oserror(path: Path, exc: OSError) -> str:
    """A one-line reason for a failed read, in words a user understands."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{DENIED}: {path}"
    if exc.errno in (errno.ENOENT, errno.ESRCH):
        return f"missing: {path}"
    return f"cannot read {path}: {exc.strerror or exc}"


def read_text(path: Path, problems: Problems | None = None, *, quiet_missing: bool = False) -> str | None:
    """Read a small text file; strip NUL bytes and surrounding white space.

    Returns None when it cannot be read; the reason goes to ``problems`` (missing files only when
    ``quiet_missing`` is false).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        if problems is not None and not (quiet_missing and exc.errno in (errno.ENOENT, errno.ESRCH)):
            problems.add(describe_oserror(path, exc))
        return None
    return data.replace(b"\x00", b"").decode("utf-8", "replace").strip()


def read_int(path: Path, problems: Problems | None = None, *, quiet_missing: bool = False) -> int | None:
    """Read a file holding one integer; None (with a reason) when missing or garbled."""
    text = read_text(path, problems, quiet_missing=quiet_missing)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        if problems is not None:
            problems.add(f"garbled: {path}")
        return None
