"""Record and replay sessions: snapshots as JSON lines (optionally gzip-compressed).

The first line is a header (``{"format": "numatop-llm-recording", "version": 1, ...}``), every
other line is one ``Snapshot``. Replay feeds the same app as live sampling does. A damaged line
(a recording cut by a crash, a hand edit) is skipped and counted, never fatal.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from numatop_llm.probes.models import Snapshot

FORMAT = "numatop-llm-recording"
VERSION = 1


class RecordingError(ValueError):
    """The file is not a recording we can read; the message is one line for the user."""


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


class Recorder:
    """Appends snapshots to a file as they arrive; each line is flushed so a crash loses at most one."""

    def __init__(self, path: Path, source: str = "") -> None:
        self.path = Path(path)
        try:
            self._fh = _open(self.path, "w")
        except OSError as exc:
            raise RecordingError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        header = {"format": FORMAT, "version": VERSION, "created": time.time(), "source": source}
        self._fh.write(json.dumps(header) + "\n")
        self.count = 0

    def write(self, snap: Snapshot) -> None:
        self._fh.write(snap.model_dump_json(exclude_defaults=True) + "\n")
        self._fh.flush()
        self.count += 1

    def close(self) -> None:
        self._fh.close()


def write_recording(path: Path, snaps: list[Snapshot], source: str = "") -> None:
    rec = Recorder(path, source)
    try:
        for s in snaps:
            rec.write(s)
    finally:
        rec.close()


class Recording:
    """A recording opened for replay: its header and an iterator over its snapshots."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.skipped = 0
        try:
            with _open(self.path, "r") as fh:
                first = fh.readline()
        except FileNotFoundError:
            raise RecordingError(f"no such recording: {self.path}") from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise RecordingError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            header = json.loads(first)
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise RecordingError(f"{self.path} is not a numatop-llm recording (no header line)")
        if header.get("version", 0) > VERSION:
            raise RecordingError(f"{self.path} is a newer recording format ({header.get('version')})")
        self.header = header

    def __iter__(self) -> Iterator[Snapshot]:
        try:
            with _open(self.path, "r") as fh:
                fh.readline()
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        yield Snapshot.model_validate_json(line)
                    except ValidationError:
                        self.skipped += 1
        except (OSError, EOFError, UnicodeDecodeError):
            # a truncated gzip stream ends the replay where the data ends
            self.skipped += 1

    def snapshots(self) -> list[Snapshot]:
        return list(self)
