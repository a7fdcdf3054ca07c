"""Small, never-raising file readers shared by the probes.

Real sysfs files can end in NUL bytes, be unreadable for non-root users, vanish while being read
(a thread exits) or be truncated. Every helper here returns ``None`` and records why, instead of
raising into the caller.
"""

from __future__ import annotations

import errno
import os
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


class KeptFiles:
    """Descriptors of files read every sample, kept open between samples: each read is one ``pread``.

    Opening a /proc or /sys file costs more than reading it, and a sampler reads the same few
    hundred files every second. A descriptor that turned stale (the process exited: ``ESRCH``; a
    PID reused by another process keeps the old descriptor failing the same way) is closed and the
    path opened again once. ``sweep()`` closes the descriptors of files not read since the last
    sweep (processes that left the tree). At most ``limit`` descriptors are kept; beyond that a
    file is opened, read and closed as usual.
    """

    CHUNK = 65536

    def __init__(self, limit: int = 512) -> None:
        self.limit = limit
        self._fds: dict[str, int] = {}
        self._used: set[str] = set()

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, path: Path | str) -> bytes:
        """The whole file, as ``Path.read_bytes()`` would return it (raises ``OSError`` the same way)."""
        key = str(path)
        self._used.add(key)
        fd = self._fds.get(key)
        if fd is not None:
            try:
                return self._pread_all(fd)
            except OSError:
                self._close(key)
        fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = self._pread_all(fd)
        except OSError:
            os.close(fd)
            raise
        if len(self._fds) < self.limit:
            self._fds[key] = fd
        else:
            os.close(fd)
        return data

    def _pread_all(self, fd: int) -> bytes:
        data = os.pread(fd, self.CHUNK, 0)
        if len(data) < self.CHUNK:
            return data
        parts = [data]
        while len(data) == self.CHUNK:
            data = os.pread(fd, self.CHUNK, sum(len(p) for p in parts))
            parts.append(data)
        return b"".join(parts)

    def _close(self, key: str) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def sweep(self) -> None:
        """Close the descriptors of files not read since the previous sweep."""
        for key in [k for k in self._fds if k not in self._used]:
            self._close(key)
        self._used = set()

    def close(self) -> None:
        for key in list(self._fds):
            self._close(key)

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()


def read_text(
    path: Path, problems: Problems | None = None, *, quiet_missing: bool = False, files: KeptFiles | None = None
) -> str | None:
    """Read a small text file; strip NUL bytes and surrounding white space.

    Returns None when it cannot be read; the reason goes to ``problems`` (missing files only when
    ``quiet_missing`` is false). With ``files``, the descriptor is kept open for the next read.
    """
    try:
        data = path.read_bytes() if files is None else files.read(path)
    except OSError as exc:
        if problems is not None and not (quiet_missing and exc.errno in (errno.ENOENT, errno.ESRCH)):
            problems.add(describe_oserror(path, exc))
        return None
    return data.replace(b"\x00", b"").decode("utf-8", "replace").strip()


def read_int(
    path: Path, problems: Problems | None = None, *, quiet_missing: bool = False, files: KeptFiles | None = None
) -> int | None:
    """Read a file holding one integer; None (with a reason) when missing or garbled."""
    text = read_text(path, problems, quiet_missing=quiet_missing, files=files)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        if problems is not None:
            problems.add(f"garbled: {path}")
        return None
