"""Where snapshots come from: a live machine, or a recording being replayed.

Both sources follow the :class:`Source` protocol — ``sample()`` returns the next ``Snapshot``
(``None`` when a replay has ended) — so the dashboard, the exporter, ``diagnose`` and the tests
all handle one kind of data. ``sample()`` runs on the sampler's thread, never on a UI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from numatop_llm.probes.engine import EngineCandidate, discover_engines
from numatop_llm.probes.kernel_log import KernelOomWatch
from numatop_llm.probes.models import Snapshot
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import CADENCE, SnapshotReader


@runtime_checkable
class Source(Protocol):
    """What the monitoring core needs from a source of snapshots."""

    #: True for this machine (or a tree on disk) read now; False for a recording
    live: bool
    label: str
    attached_pid: int | None
    #: the engine that was attached and has exited (None while attached or never attached)
    lost_pid: int | None
    candidates: list[EngineCandidate]

    def sample(self, late_seconds: float = 0.0) -> Snapshot | None: ...

    def pace(self, default: float) -> float:
        """Seconds to the next sample (a replay keeps its recording's rhythm)."""
        ...

    def attach(self, pid: int | None) -> None: ...

    def rediscover(self) -> list[EngineCandidate]: ...

    def close(self) -> None: ...


def pick_engine(found: list[EngineCandidate]) -> EngineCandidate | None:
    """The engine to attach to when the user named none: one with workers first, then the oldest."""
    if not found:
        return None
    return sorted(found, key=lambda c: (c.workers == 0, c.root_pid))[0]


class LiveSource:
    """Samples this machine (or a tree at ``roots``) and, when attached, one engine tree.

    With ``pid`` it follows that process's tree, once. Without, it discovers vLLM engines: it
    attaches when exactly one runs (or the first with workers). After the engine exits it stays
    detached until ``rediscover()`` (the dashboard: the user decides when to follow a new
    engine), or, with ``follow``, looks again at every sample (the exporter: a relaunched or
    restarted engine is picked up by itself).
    """

    live = True

    def __init__(
        self,
        roots: SysRoots | None = None,
        pid: int | None = None,
        *,
        discover: bool = True,
        follow: bool = False,
        kernel_log: Path | None = Path("/dev/kmsg"),
    ) -> None:
        self.roots = roots or SysRoots()
        self.follow = follow and pid is None
        self.reader = SnapshotReader(self.roots, None)
        live_proc = self.roots.proc.resolve() == Path("/proc")
        self.oom_watch = KernelOomWatch(kernel_log if live_proc else None)
        self.candidates: list[EngineCandidate] = []
        self.attached_pid: int | None = None
        self.lost_pid: int | None = None
        self._lock = threading.Lock()
        if pid is not None:
            self.attach(pid)
        elif discover:
            self.rediscover()

    @property
    def label(self) -> str:
        return "live" if self.roots.proc.resolve() == Path("/proc") else f"tree at {self.roots.sys.parent}"

    def attach(self, pid: int | None) -> None:
        """Follow ``pid``'s tree from the next sample on (safe to call from another thread)."""
        with self._lock:
            self.reader.attach(pid)
            self.attached_pid = pid
            self.lost_pid = None

    def _discover(self) -> EngineCandidate | None:
        """Look for running engines (kept in ``candidates``); the one to attach to."""
        self.candidates = discover_engines(self.roots)
        return pick_engine(self.candidates)

    def rediscover(self) -> list[EngineCandidate]:
        """Look for running engines again and attach to the best one; returns all found."""
        best = self._discover()
        self.attach(best.root_pid if best else None)
        return self.candidates

    def sample(self, late_seconds: float = 0.0) -> Snapshot:
        # the lock keeps an attach() from another thread (a relaunch) out of a sample in progress
        if self.follow and self.attached_pid is None:
            self.rediscover()
        with self._lock:
            kills = tuple(self.oom_watch.poll())
            snap = self.reader.read(**CADENCE, late_seconds=late_seconds, oom_kills=kills)
            if self.oom_watch.problem and self.oom_watch.mode != "kmsg":
                snap = snap.model_copy(update={"degraded": (*snap.degraded, self.oom_watch.problem)})
            if snap.engine is None and self.attached_pid is not None:
                # the engine is gone: keep sampling the machine, remember whom we lost
                self.lost_pid = self.attached_pid
                self.reader.attach(None)
                self.attached_pid = None
                if self.follow:
                    # an engine relaunched under another pid is the same service: follow it now
                    best = self._discover()
                    if best is not None:
                        self.reader.attach(best.root_pid)
                        self.attached_pid = best.root_pid
                        again = self.reader.read(**CADENCE, late_seconds=late_seconds)
                        snap = again.model_copy(update={"oom_kills": kills})
            return snap

    def pace(self, default: float) -> float:
        return default

    def close(self) -> None:
        with self._lock:
            self.reader.close()
            self.oom_watch.close()


class ReplaySource:
    """Plays back recorded snapshots; ``sample()`` returns ``None`` after the last one.

    ``pace()`` tells how long to wait before the next sample so that a replay runs at the
    recording's own speed (``speed`` times faster); the first sample is immediate.
    """

    live = False

    def __init__(self, snaps: Iterable[Snapshot], *, label: str = "replay", speed: float = 1.0) -> None:
        self._it = iter(snaps)
        self.label = label
        self.speed = speed
        self._next: Snapshot | None = next(self._it, None)
        self._prev_at: float | None = None
        self.count = 0
        self.attached_pid: int | None = None
        self.lost_pid: int | None = None
        self.candidates: list[EngineCandidate] = []

    @classmethod
    def from_file(cls, path: Path, **kw) -> ReplaySource:
        from numatop_llm.recording import Recording

        rec = Recording(path)
        return cls(rec, label=f"replay {Path(path).name}", **kw)

    def pace(self, default: float) -> float:
        if self._next is None or self._prev_at is None:
            return 0.0 if self._prev_at is None else default
        gap = self._next.taken_at - self._prev_at
        return max(0.0, min(gap, 10.0)) / max(self.speed, 0.01) if gap > 0 else default

    def sample(self, late_seconds: float = 0.0) -> Snapshot | None:
        snap = self._next
        if snap is None:
            return None
        self._next = next(self._it, None)
        self._prev_at = snap.taken_at
        self.count += 1
        if snap.engine is not None:
            self.attached_pid = snap.engine.root_pid
        elif self.attached_pid is not None:
            self.lost_pid, self.attached_pid = self.attached_pid, None
        return snap

    @property
    def finished(self) -> bool:
        return self._next is None

    def attach(self, pid: int | None) -> None:  # a recording cannot follow another process
        pass

    def rediscover(self) -> list[EngineCandidate]:
        return []

    def close(self) -> None:
        pass


def demo_source(speed: float = 1.0) -> ReplaySource:
    """The bundled 8-node story."""
    from numatop_llm.demo.story import DEMO_FILE
    from numatop_llm.recording import Recording

    return ReplaySource(Recording(DEMO_FILE), label="demo: 8-node story", speed=speed)
