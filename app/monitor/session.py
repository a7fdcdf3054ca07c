"""The monitoring session: one source, sampled into one typed result that every front end reads.

What a running engine means is computed here, once, for the dashboard, the exporter and
``diagnose``: which engine is attached (and re-discovery, done on the sampler's thread), which
kernel OOM kills hit the engine's processes (a killed process is gone from /proc, so it is
matched against the processes seen before), the engine's memory record for a later post-mortem,
and the planner's verdict on the running configuration.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from numatop_llm.monitor.planbridge import EnginePlanner, PlanVerdict
from numatop_llm.monitor.sources import Source
from numatop_llm.probes.engine import EngineCandidate
from numatop_llm.probes.kernel_log import OomKill
from numatop_llm.probes.models import Process, Role, Snapshot

#: pids remembered for OOM attribution (a long-lived exporter sees many engines come and go)
KNOWN_MAX = 4096
#: the engine record for ``explain`` is rewritten at once when the tree changes, else this often
REMEMBER_EVERY = 60.0


@dataclass(frozen=True)
class KnownProcess:
    """What an engine process was, kept after it is gone (for a kill reported later)."""

    pid: int
    role: Role
    rank: int | None
    name: str

    @classmethod
    def of(cls, p: Process) -> KnownProcess:
        return cls(p.pid, p.role, p.rank if p.role == Role.WORKER else None, p.display_name)


@dataclass(frozen=True)
class EngineKill:
    """A kernel OOM kill of a process that belonged to the attached engine."""

    kill: OomKill
    process: KnownProcess


@dataclass(frozen=True)
class MonitorSample:
    """One sample with everything derived from it; immutable, safe to hand to another thread."""

    snapshot: Snapshot
    verdict: PlanVerdict
    #: OOM kills in this sample that hit the engine's processes
    engine_kills: tuple[EngineKill, ...] = ()
    attached_pid: int | None = None
    #: the engine that exited since the last sample (None while it runs)
    lost_pid: int | None = None
    #: set when this sample followed a re-discovery: every engine found
    candidates: tuple[EngineCandidate, ...] | None = None


class MonitorSession:
    """Samples ``source`` and derives what a front end shows. Call ``sample()`` from one thread."""

    def __init__(
        self,
        source: Source,
        *,
        planner: EnginePlanner | None = None,
        remember: bool = False,
        remember_every: float = REMEMBER_EVERY,
    ) -> None:
        self.source = source
        self.planner = planner
        self.remember = remember and source.live
        self.remember_every = remember_every
        self.known: dict[int, KnownProcess] = {}
        self._rediscover = threading.Event()
        self._remembered: tuple[tuple, float] | None = None

    # -- requests from other threads ----------------------------------------------------------

    def request_rediscover(self) -> None:
        """Look for engines again at the next sample (on the sampler's thread, never the UI's)."""
        self._rediscover.set()

    # -- one sample -----------------------------------------------------------------------------

    def sample(self, late_seconds: float = 0.0) -> MonitorSample | None:
        """The next sample, or None when the source has ended (a replay)."""
        candidates = None
        if self._rediscover.is_set():
            self._rediscover.clear()
            candidates = tuple(self.source.rediscover())
        snap = self.source.sample(late_seconds)
        if snap is None:
            return None
        engine = snap.engine
        attached = self.source.attached_pid
        # kills first, matched against the processes seen before this sample (the victim is gone now)
        kills: list[EngineKill] = []
        current = {p.pid: p for p in engine.processes} if engine is not None else {}
        for k in snap.oom_kills:
            who = self.known.get(k.pid) or (KnownProcess.of(current[k.pid]) if k.pid in current else None)
            if who is not None:
                kills.append(EngineKill(k, who))
        for p in current.values():
            self.known[p.pid] = KnownProcess.of(p)
        if len(self.known) > KNOWN_MAX:
            self.known = dict(list(self.known.items())[-KNOWN_MAX // 2 :])
        verdict = (
            self.planner.verdict(engine, snap.topology)
            if self.planner is not None and engine is not None
            else PlanVerdict()
        )
        if self.remember and engine is not None:
            self._remember(snap)
        return MonitorSample(
            snapshot=snap,
            verdict=verdict,
            engine_kills=tuple(kills),
            attached_pid=attached,
            lost_pid=self.source.lost_pid,
            candidates=candidates,
        )

    def _remember(self, snap: Snapshot) -> None:
        """Keep the engine's shape on disk for ``numatop-llm explain`` after a -9."""
        engine = snap.engine
        assert engine is not None
        key = (engine.root_pid, tuple(sorted(p.pid for p in engine.processes)))
        now = time.monotonic()
        if (
            self._remembered is not None
            and self._remembered[0] == key
            and now - self._remembered[1] < self.remember_every
        ):
            return
        from numatop_llm.statedir import remember_engine

        try:
            remember_engine(engine, snap.topology, snap.taken_at)
        except OSError:
            pass  # a read-only home must not stop the monitor; explain will say the record is missing
        self._remembered = (key, now)

    def close(self) -> None:
        self.source.close()
