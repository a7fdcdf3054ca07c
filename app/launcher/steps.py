"""What a relaunch reports: one :class:`Step` per transition, an :class:`Outcome` at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class StepStatus(StrEnum):
    """Where a relaunch step stands (written to the journal as its value)."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


RUNNING, OK, FAILED, SKIPPED = StepStatus.RUNNING, StepStatus.OK, StepStatus.FAILED, StepStatus.SKIPPED
#: planner verdicts that block a relaunch unless forced
BLOCKING_VERDICTS = ("oom", "error")
METRIC_RUNNING = "vllm:num_requests_running"
METRIC_WAITING = "vllm:num_requests_waiting"


@dataclass(frozen=True)
class Step:
    """One step's state. ``countdown`` is the seconds left before the step's timeout (while running)."""

    name: str
    status: StepStatus
    message: str = ""
    seconds: float = 0.0
    countdown: float | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def done(self) -> bool:
        return self.status != RUNNING


@dataclass(frozen=True)
class Outcome:
    """How a relaunch ended. ``new_pid`` is the engine now serving (the rolled-back one after a rollback)."""

    ok: bool
    rolled_back: bool
    new_pid: int | None
    steps: tuple[Step, ...]
    message: str
    log_tail: str = ""
    log_path: str | None = None
    explanations: tuple[str, ...] = ()
    run_id: str = ""

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per finished step (a rollback's steps are prefixed ``rollback``)."""
        return {s.name: round(s.seconds, 3) for s in self.steps if s.done}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rolled_back": self.rolled_back,
            "new_pid": self.new_pid,
            "message": self.message,
            "run": self.run_id,
            "log_path": self.log_path,
            "log_tail": self.log_tail,
            "explanations": list(self.explanations),
            "timings": self.timings,
            "steps": [
                {"name": s.name, "status": s.status, "seconds": round(s.seconds, 3), "message": s.message}
                for s in self.steps
            ],
        }


def parse_request_counts(text: str) -> tuple[float, float] | None:
    """(running, waiting) summed over every label set of vLLM's gauges; None when neither is present."""
    running = waiting = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(None, 1)[1])
        except (IndexError, ValueError):
            continue
        if name == METRIC_RUNNING:
            running += value
            found = True
        elif name == METRIC_WAITING:
            waiting += value
            found = True
    return (running, waiting) if found else None
