"""The relaunch journal: JSON lines under ``$XDG_STATE_HOME/numatop-llm/``, one record per event.

A relaunch writes ``begin`` (old and new command, masked; the diff; the plan's verdict), one
``step`` record per finished step (what ran, when, how long, exit codes) and ``end``. Every
record goes through the masking of :mod:`numatop_llm.probes.secrets` (by the writer) and a
:class:`~numatop_llm.launcher.scrub.Scrubber` (here) that removes known secret values wherever they are.
``numatop-llm history`` reads the file back with :func:`read_history`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numatop_llm.launcher.scrub import Scrubber
from numatop_llm.statedir import state_dir

JOURNAL_NAME = "relaunch.jsonl"


def default_path() -> Path:
    return state_dir() / JOURNAL_NAME


class Journal:
    """Append-only JSON-lines journal. Writing is best effort: a failure is kept in ``problems``."""

    def __init__(self, path: Path | None = None, scrubber: Scrubber | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.scrubber = scrubber or Scrubber()
        self.problems: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        now = time.time()
        rec = {"ts": round(now, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), **record}
        line = self.scrubber.text(json.dumps(self.scrubber.data(rec), default=str, separators=(",", ":")))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line + "\n")
        except OSError as exc:
            self.problems.append(f"cannot write the journal {self.path}: {exc.strerror or exc}")


@dataclass
class RelaunchRecord:
    """One relaunch as the journal tells it."""

    run: str
    started: float = 0.0
    ended: float | None = None
    old_pid: int | None = None
    new_pid: int | None = None
    ok: bool | None = None
    rolled_back: bool = False
    message: str = ""
    changes: list[str] = field(default_factory=list)
    verdict: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.ok is None:
            return "unfinished"
        if self.ok:
            return "ok"
        return "rolled back" if self.rolled_back else "failed"

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "started": self.started,
            "ended": self.ended,
            "seconds": self.seconds,
            "status": self.status,
            "ok": self.ok,
            "rolled_back": self.rolled_back,
            "old_pid": self.old_pid,
            "new_pid": self.new_pid,
            "verdict": self.verdict,
            "changes": self.changes,
            "message": self.message,
            "steps": self.steps,
        }


def read_history(path: Path | None = None) -> tuple[list[RelaunchRecord], list[str]]:
    """Every relaunch in the journal, oldest first, and one-line problems (garbled lines, unreadable file)."""
    path = Path(path) if path is not None else default_path()
    problems: list[str] = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot read the journal {path}: {exc.strerror or exc}"]
    runs: dict[str, RelaunchRecord] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            run_id = str(rec["run"])
            event = rec["event"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"{path}:{n}: garbled journal line skipped")
            continue
        r = runs.setdefault(run_id, RelaunchRecord(run=run_id, started=float(rec.get("ts") or 0)))
        if event == "begin":
            r.started = float(rec.get("ts") or r.started)
            r.old_pid = rec.get("old", {}).get("pid")
            r.changes = list(rec.get("diff") or [])
            r.verdict = rec.get("verdict")
        elif event == "step":
            r.steps.append({k: rec.get(k) for k in ("name", "status", "seconds", "message", "time") if k in rec})
        elif event == "end":
            r.ended = float(rec.get("ts") or 0)
            r.ok = bool(rec.get("ok"))
            r.rolled_back = bool(rec.get("rolled_back"))
            r.new_pid = rec.get("new_pid")
            r.message = str(rec.get("message") or "")
    return sorted(runs.values(), key=lambda r: r.started), problems
