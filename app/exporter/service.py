"""The exporter: the monitoring core's ticker and session, published as metric families.

Every sample is turned into families once (on the sampler's thread); a scrape only serialises
the latest families and never reads /proc. Sampling, engine discovery, OOM attribution, the
engine record and the planner's verdict are the monitoring core's (:mod:`numatop_llm.monitor`),
shared with the dashboard and ``diagnose``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from numatop_llm import __version__
from numatop_llm.exporter.families import CONSTRAINTS, Health, OomCounts, _rank_label, build_families
from numatop_llm.exporter.headroom import RankHeadroom, fallback_headroom, headroom_from_plan
from numatop_llm.monitor.planbridge import EnginePlanner
from numatop_llm.monitor.session import MonitorSample, MonitorSession
from numatop_llm.monitor.sources import LiveSource
from numatop_llm.monitor.ticker import Ticker
from numatop_llm.probes.models import Snapshot
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader


class SnapshotCollector(Collector):
    """Serves the latest families the sampler built; a scrape does no I/O."""

    def __init__(self, source: Callable[[], Sequence[Metric]]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return iter(self._source())


def _stderr(msg: str) -> None:
    print(f"numatop-llm export: {msg}", file=sys.stderr, flush=True)


class Exporter:
    """Samples the machine (and an engine) on deadlines and exposes the result to a registry.

    With ``pid`` it follows that process's engine tree and, once it exits, exports node metrics
    only (``engine_attached`` 0). Without ``pid`` it discovers a vLLM engine, and discovers again
    whenever the attached engine goes away (a relaunch, a crash).
    """

    def __init__(
        self,
        roots: SysRoots,
        *,
        pid: int | None = None,
        interval: float = 5.0,
        kernel_log: Path | None = Path("/dev/kmsg"),
        use_planner: bool = True,
        remember: bool = True,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        self.roots = roots
        self.interval = interval
        self.log = log
        self.version = __version__
        self.source = LiveSource(roots, pid, discover=False, follow=pid is None, kernel_log=kernel_log)
        self.session = MonitorSession(self.source, planner=EnginePlanner() if use_planner else None, remember=remember)
        self.health = Health(interval=interval)
        self.oom = OomCounts()
        self.last: Snapshot | None = None
        self._fixed_pid = pid
        self._families: tuple[Metric, ...] = tuple(
            build_families(None, health=self.health, oom=self.oom, version=self.version)
        )
        self._planner_logged: str | None = None
        self._lock = threading.Lock()
        self._ticker: Ticker | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(lambda: self._families))
        from prometheus_client import ProcessCollector

        ProcessCollector(registry=self.registry)
        watch = self.source.oom_watch
        if watch.problem and watch.mode != "off":
            log(watch.problem)

    @property
    def reader(self) -> SnapshotReader:
        return self.source.reader

    @property
    def attached_pid(self) -> int | None:
        return self.source.attached_pid

    # -- one sample --------------------------------------------------------------------------

    def sample_once(self, late_seconds: float = 0.0) -> Snapshot:
        """Take one sample and publish its families. Never raises for machine state."""
        with self._lock:
            t0 = time.perf_counter()
            # --pid: that process's engine, once; after it exits only node metrics are exported
            if (
                self._fixed_pid is not None
                and self.health.attaches == 0
                and self.source.attached_pid is None
                and (self.roots.proc / str(self._fixed_pid)).is_dir()
            ):
                self.source.attach(self._fixed_pid)
            before = self.source.attached_pid
            sample = self.session.sample(late_seconds)
            assert sample is not None  # a live source never ends
            self._publish(sample, before, time.perf_counter() - t0)
            return sample.snapshot

    def _publish(self, sample: MonitorSample, before: int | None, seconds: float) -> None:
        snap = sample.snapshot
        engine = snap.engine
        if before is not None and sample.attached_pid != before:
            self.log(f"engine pid {before} exited")
        if sample.attached_pid is not None and sample.attached_pid != self.health.attached_pid:
            self.health.attaches += 1
            self.log(f"attached to pid {sample.attached_pid}")
        self.health.attached_pid = sample.attached_pid
        for k in snap.oom_kills:
            c = CONSTRAINTS.get(k.constraint, "none")
            self.oom.host[c] = self.oom.host.get(c, 0) + 1
        for ek in sample.engine_kills:
            who = ek.process
            key = (who.role.value, "" if who.rank is None else str(who.rank))
            self.oom.engine[key] = self.oom.engine.get(key, 0) + 1
            self.log(f"OOM kill of engine pid {ek.kill.pid} ({ek.kill.task}, {ek.kill.kind})")
        problems: list[str] = []
        watch = self.source.oom_watch
        if watch.problem:
            problems.append(watch.problem)
        headroom: dict[int, RankHeadroom] | None = None
        source = ""
        if engine is not None and engine.workers():
            problem = sample.verdict.problem
            if problem:
                problems.append(f"{problem}; headroom from node memory")
                if problem != self._planner_logged:
                    self.log(problem)
            self._planner_logged = problem
            planned = headroom_from_plan(sample.verdict.plan, engine)
            # the planner's figures where it has them, the node rule for any other bound rank
            headroom = {**fallback_headroom(engine, snap.topology), **(planned or {})}
            source = "planner" if planned else "node_available"
        self.health.samples += 1
        if snap.late_seconds > 0:
            self.health.late_samples += 1
        self.health.sample_seconds = seconds
        self.health.last_sample_at = snap.taken_at
        self._families = tuple(
            build_families(
                snap,
                health=self.health,
                oom=self.oom,
                headroom=headroom,
                headroom_source=source,
                problems=problems,
                version=self.version,
            )
        )
        self.last = snap

    # -- the sampling thread -----------------------------------------------------------------

    def _tick(self, late: float) -> float:
        try:
            self.sample_once(late_seconds=late)
        except Exception as exc:  # a bug must not silently stop the exporter's samples
            self.log(f"sample failed: {type(exc).__name__}: {exc}")
        return self.interval

    def start(self, first_in: float = 0.0) -> None:
        """Start sampling in a background thread; the first sample is due ``first_in`` seconds from now."""
        self._ticker = Ticker(self._tick, self.interval, first_in=first_in).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling (joining the thread) and release descriptors (kmsg, thread stat files)."""
        if self._ticker is not None:
            self._ticker.stop(timeout)
        with self._lock:
            self.session.close()


__all__ = ["Exporter", "SnapshotCollector", "_rank_label"]
