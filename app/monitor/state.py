"""What a watcher accumulates over samples: the latest snapshot, history, the engine's exit, findings.

One place owns each fact: widgets read from here and never from /proc. Updated once per
:class:`~numatop_llm.monitor.session.MonitorSample` (the dashboard does it on the UI thread, from
the message the sampler posts; ``diagnose`` does it directly); plain Python, no Textual.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from numatop_llm.monitor.diagnoses import Finding, diagnose
from numatop_llm.monitor.session import MonitorSample
from numatop_llm.postmortem import Explanation, explain_kill
from numatop_llm.probes.kernel_log import OomKill
from numatop_llm.probes.models import Engine, Snapshot
from numatop_llm.statedir import engine_record

if TYPE_CHECKING:
    from numatop_llm.planner import Plan

#: samples of history kept for the memory plot (10 minutes at 1 Hz)
HISTORY = 600


def clock(ts: float) -> str:
    """A wall-clock time as the operator reads it (local time of the viewer)."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


@dataclass(frozen=True)
class HistoryPoint:
    at: float
    used: dict[int, int]


@dataclass
class EngineExit:
    """The attached engine went away: when, and what the kernel said about it."""

    pid: int
    at: float
    kill: OomKill | None = None
    explanation: Explanation | None = None

    @property
    def headline(self) -> str:
        if self.kill is not None:
            who = self.explanation.who if self.explanation else self.kill.task
            return f"engine exited (signal 9 at {clock(self.at)}): {who} was OOM-killed"
        return f"engine exited at {clock(self.at)}"


@dataclass
class AppState:
    latest: Snapshot | None = None
    #: the last snapshot in which the engine was alive (kept after it exits)
    last_engine: Snapshot | None = None
    plan: Plan | None = None
    plan_problem: str | None = None
    plan_note: str | None = None
    exit: EngineExit | None = None
    #: kills of engine processes the kernel reported: (wall time, explanation)
    kills: list[tuple[float, Explanation]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    history: deque[HistoryPoint] = field(default_factory=lambda: deque(maxlen=HISTORY))
    samples: int = 0
    late_samples: int = 0
    _record: dict | None = None

    @property
    def engine(self) -> Engine | None:
        """The engine to show: the live one, or the last one seen when it has exited."""
        if self.latest is not None and self.latest.engine is not None:
            return self.latest.engine
        return self.last_engine.engine if self.last_engine is not None else None

    @property
    def engine_alive(self) -> bool:
        return self.latest is not None and self.latest.engine is not None

    def update(self, sample: MonitorSample) -> None:
        """Take in one sample: kills are explained, an exit noticed, history and findings renewed."""
        snap = sample.snapshot
        prev_alive = self.engine_alive
        self.latest = snap
        self.samples += 1
        if snap.late_seconds > 0:
            self.late_samples += 1
        v = sample.verdict
        self.plan, self.plan_problem, self.plan_note = v.plan, v.problem, v.note
        engine = snap.engine
        # kills first, explained with the engine as it was before this sample (the victim is gone now)
        for ek in sample.engine_kills:
            k = ek.kill
            rec = self._record_for()
            boot = snap.taken_at - k.uptime_seconds if k.uptime_seconds is not None else None
            self.kills.append((snap.taken_at, explain_kill(k, rec, boot)))
        if engine is not None:
            if (
                self.last_engine is None
                or self.last_engine.engine is None
                or (self.last_engine.engine.root_pid != engine.root_pid)
            ):
                self.exit = None  # a new engine: forget the old one's exit and kills
                self.kills = []
            self.last_engine = snap
            self._record = None
        if prev_alive and engine is None and self.last_engine is not None and self.last_engine.engine is not None:
            lost = self.last_engine.engine
            seen = self.kills[-1] if self.kills else None
            self.exit = EngineExit(
                pid=lost.root_pid,
                at=seen[0] if seen else snap.taken_at,
                kill=seen[1].kill if seen else None,
                explanation=seen[1] if seen else None,
            )
        used = {}
        for n in snap.topology.nodes:
            if n.memory is not None:
                used[n.id] = n.memory.total_bytes - n.memory.free_bytes
        self.history.append(HistoryPoint(snap.taken_at, used))
        self.findings = diagnose(snap, self)

    def _record_for(self) -> dict | None:
        if self._record is None and self.last_engine is not None and self.last_engine.engine is not None:
            self._record = engine_record(self.last_engine.engine, self.last_engine.topology, self.last_engine.taken_at)
        return self._record

    def growth_rate(self, node: int, seconds: float = 10.0) -> float | None:
        """Bytes per second the node's used memory grew over the last ``seconds`` (None: too little history)."""
        if len(self.history) < 2:
            return None
        last = self.history[-1]
        first = next((h for h in self.history if last.at - h.at <= seconds), None)
        if first is None or first is last or last.at - first.at <= 0:
            return None
        if node not in last.used or node not in first.used:
            return None
        return (last.used[node] - first.used[node]) / (last.at - first.at)
