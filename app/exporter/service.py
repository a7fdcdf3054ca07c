"""Prometheus exporter: what the dashboard knows, as metrics a fleet's Prometheus collects.

A background thread samples on fixed deadlines (``interval`` apart, on the monotonic clock) with
the same reader and numa_maps cadence rule as the TUI; every sample is turned into metric
families once, and a scrape only serialises the latest families. A scrape never reads /proc.

Labels are kept low-cardinality: ``node``, ``role``, ``rank`` (and a few config labels on the
``_info`` metrics). Nothing is labelled per thread or per PID.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from numatop_llm.probes.engine import discover_engines
from numatop_llm.probes.kernel_log import KernelOomWatch
from numatop_llm.probes.models import Engine, Process, Role, Snapshot, Topology
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import CADENCE, SnapshotReader

PREFIX = "numatop_llm"
MIB = 2**20

#: kernel OOM constraints, as label values (pre-created at zero so ``increase()`` sees the first kill)
CONSTRAINTS = {
    "CONSTRAINT_MEMORY_POLICY": "memory_policy",
    "CONSTRAINT_MEMCG": "memcg",
    "CONSTRAINT_CPUSET": "cpuset",
    "CONSTRAINT_NONE": "none",
}

#: fallback "will OOM" rule for a strictly bound rank: headroom below this many bytes, or below
#: this fraction of the node, leaves no room for the next allocation (activations, a new block)
WILL_OOM_MIN_BYTES = 256 * MIB
WILL_OOM_NODE_FRACTION = 0.02


# --------------------------------------------------------------------------------------------
# Strict-bind headroom per rank
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankHeadroom:
    """How much more a strictly bound rank can take on its node before the kernel OOM-kills it."""

    rank: int
    node: int
    headroom_bytes: int
    will_oom: bool
    #: ``planner`` (node budget − predicted need) or ``node_available`` (the fallback rule)
    source: str
    budget_bytes: int | None = None
    need_bytes: int | None = None


def _strict_node(p: Process) -> int | None:
    if p.policy.strict and len(p.policy.nodes) == 1:
        return p.policy.nodes[0]
    return None


def fallback_headroom(engine: Engine, topology: Topology) -> dict[int, RankHeadroom]:
    """Headroom without the planner: what the bind node can still give (vLLM's "available").

    Only ranks whose memory is strictly bound to one node have a strict-bind headroom; the
    kernel lets other ranks spill to other nodes. Under a strict bind the kernel reclaims the
    node's page cache before it kills, so free + file LRU + reclaimable slab is what is left
    (the same sum vLLM 0.32 calls a node's available memory). A cgroup memory limit clamps it.
    """
    out: dict[int, RankHeadroom] = {}
    for w in engine.workers():
        node_id = _strict_node(w)
        if node_id is None or w.rank is None:
            continue
        node = topology.node(node_id)
        if node is None or node.memory is None:
            continue
        headroom = node.memory.vllm_available_bytes
        cg = w.cgroup
        if cg is not None and cg.memory_max is not None and cg.memory_current is not None:
            headroom = min(headroom, cg.memory_max - cg.memory_current)
        floor = max(WILL_OOM_MIN_BYTES, int(WILL_OOM_NODE_FRACTION * node.memory.total_bytes))
        out[w.rank] = RankHeadroom(
            rank=w.rank,
            node=node_id,
            headroom_bytes=headroom,
            will_oom=headroom < floor,
            source="node_available",
        )
    return out


class PlannerBridge:
    """Per-rank budget and need from the planner (through ``app.planbridge.EnginePlanner``, the
    same bridge the dashboard uses: model resolution, caching, the running engine's own memory
    left out of its budgets). Any failure is a reason, never an exception: the exporter falls
    back to the node rule.
    """

    def __init__(self, every: float = 30.0) -> None:
        from numatop_llm.monitor.planbridge import EnginePlanner

        self._planner = EnginePlanner(every=every)
        self._plan_obj: object = None
        self._result: dict[int, RankHeadroom] | None = None

    @property
    def available(self) -> bool:
        return self._planner.available

    @property
    def problem(self) -> str | None:
        p = self._planner.problem
        if p and not self.available:
            return f"{p}; headroom from node memory"
        return p

    def headroom(self, engine: Engine, topology: Topology) -> dict[int, RankHeadroom] | None:
        plan = self._planner.plan(engine, topology)
        if plan is None:
            self._plan_obj, self._result = None, None
            return None
        if plan is not self._plan_obj:
            self._plan_obj, self._result = plan, _headroom_from_plan(plan, engine)
        return self._result


def _headroom_from_plan(plan: object, engine: Engine) -> dict[int, RankHeadroom] | None:
    homes = {w.rank: w.home_node for w in engine.workers() if w.rank is not None}
    out: dict[int, RankHeadroom] = {}
    for i, r in enumerate(getattr(plan, "ranks", ()) or ()):
        rank = getattr(r, "rank", i)
        budget = getattr(r, "node_budget_bytes", None)
        need = getattr(r, "need_bytes", None)
        if budget is None or need is None:
            continue
        node = getattr(r, "node", None)
        if node is None:
            node = homes.get(rank)
        if node is None:
            continue
        verdict = str(getattr(r, "verdict", "")).lower()
        out[rank] = RankHeadroom(
            rank=rank,
            node=int(node),
            headroom_bytes=int(budget) - int(need),
            will_oom=int(need) > int(budget) or "oom" in verdict,
            source="planner",
            budget_bytes=int(budget),
            need_bytes=int(need),
        )
    return out or None


# --------------------------------------------------------------------------------------------
# Metric families from one snapshot
# --------------------------------------------------------------------------------------------


@dataclass
class Health:
    """The sampler's own state, exported with every sample."""

    interval: float
    samples: int = 0
    late_samples: int = 0
    attaches: int = 0
    sample_seconds: float = 0.0
    last_sample_at: float = 0.0
    attached_pid: int | None = None


@dataclass
class OomCounts:
    """OOM kills seen since the exporter started."""

    #: kernel-log kills of processes that belonged to the attached engine, by (role, rank)
    engine: dict[tuple[str, str], int] = field(default_factory=dict)
    #: every kernel-log kill on the host, by constraint label
    host: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONSTRAINTS.values(), 0))


def _rank_label(p: Process) -> str:
    return str(p.rank) if p.role == Role.WORKER and p.rank is not None else ""


def _n(value: float | None) -> float:
    return float(value) if value is not None else float("nan")


def build_families(
    snap: Snapshot | None,
    *,
    health: Health,
    oom: OomCounts,
    headroom: dict[int, RankHeadroom] | None = None,
    headroom_source: str = "",
    problems: Sequence[str] = (),
    version: str = "",
) -> list[Metric]:
    """Every metric family for one sample (``snap`` None before the first sample)."""
    fams: list[Metric] = []
    g = GaugeMetricFamily
    engine = snap.engine if snap is not None else None

    if snap is not None:
        host = InfoMetricFamily(f"{PREFIX}_host", "The sampled host.", labels=())
        host.add_metric([], {"hostname": snap.host, "kernel": snap.kernel, "version": version})
        fams.append(host)

        total = g(f"{PREFIX}_node_memory_total_bytes", "NUMA node MemTotal.", labels=["node"])
        free = g(f"{PREFIX}_node_memory_free_bytes", "NUMA node MemFree.", labels=["node"])
        used = g(f"{PREFIX}_node_memory_used_bytes", "NUMA node MemUsed (total - free).", labels=["node"])
        avail = g(
            f"{PREFIX}_node_memory_available_bytes",
            "NUMA node free + file LRU + reclaimable slab (what vLLM 0.32 calls available).",
            labels=["node"],
        )
        cpus = g(f"{PREFIX}_node_cpus", "Online CPUs of the NUMA node.", labels=["node"])
        for n in snap.topology.nodes:
            cpus.add_metric([str(n.id)], len(n.cpus))
            if n.memory is None:
                continue
            total.add_metric([str(n.id)], n.memory.total_bytes)
            free.add_metric([str(n.id)], n.memory.free_bytes)
            used.add_metric([str(n.id)], n.memory.used_bytes)
            avail.add_metric([str(n.id)], n.memory.vllm_available_bytes)
        fams += [total, free, used, avail, cpus]

    if engine is not None:
        info = InfoMetricFamily(f"{PREFIX}_engine", "The attached vLLM engine's configuration.", labels=())
        c = engine.config
        info.add_metric(
            [],
            {
                "model": c.model or "",
                "served_name": c.served_name or "",
                "tp": str(c.tensor_parallel_size),
                "pp": str(c.pipeline_parallel_size),
                "bind": c.omp_threads_bind or "",
                "kv_cache_gib": "" if c.kv_cache_gib is None else f"{c.kv_cache_gib:g}",
                "max_model_len": "" if c.max_model_len is None else str(c.max_model_len),
                "dtype": c.dtype or "",
                "vllm_version": c.vllm_version or "",
            },
        )
        if engine.is_vllm:
            fams.append(info)

        procs = g(f"{PREFIX}_engine_processes", "Processes of the attached engine by role.", labels=["role"])
        by_role: dict[str, int] = {}
        mem: dict[tuple[str, str, str], int] = {}
        for p in engine.processes:
            by_role[p.role.value] = by_role.get(p.role.value, 0) + 1
            for node_id, b in p.node_bytes.items():
                k = (str(node_id), p.role.value, _rank_label(p))
                mem[k] = mem.get(k, 0) + b
        for role, count in sorted(by_role.items()):
            procs.add_metric([role], count)
        memf = g(
            f"{PREFIX}_engine_memory_bytes",
            "Resident bytes of the engine's processes on each node (numa_maps), by role and rank.",
            labels=["node", "role", "rank"],
        )
        for k in sorted(mem):
            memf.add_metric(list(k), mem[k])
        fams += [procs, memf]

        rinfo = g(
            f"{PREFIX}_rank_info",
            "1 per worker rank; node is its home node (strict bind node, else where most threads run).",
            labels=["rank", "node", "label", "policy"],
        )
        local = g(f"{PREFIX}_rank_local_bytes", "Resident bytes of the rank on its home node.", labels=["rank", "node"])
        remote = g(
            f"{PREFIX}_rank_remote_bytes",
            "Resident bytes of the rank on nodes other than its home node.",
            labels=["rank"],
        )
        threads = g(f"{PREFIX}_rank_threads", "Threads of the rank's worker process.", labels=["rank"])
        off = g(
            f"{PREFIX}_rank_off_node_threads",
            "Threads of the rank whose last CPU is off its home node.",
            labels=["rank"],
        )
        for w in sorted(engine.workers(), key=lambda p: (p.rank is None, p.rank or 0)):
            if w.rank is None:
                continue
            r = str(w.rank)
            home = w.home_node
            threads.add_metric([r], len(w.threads))
            off.add_metric([r], w.off_node_threads)
            remote.add_metric([r], w.remote_bytes)
            if home is not None:
                rinfo.add_metric([r, str(home), w.label or "", w.policy.text], 1)
                local.add_metric([r, str(home)], w.node_bytes.get(home, 0))
        fams += [rinfo, local, remote, threads, off]

        hr = g(
            f"{PREFIX}_rank_headroom_bytes",
            "Strict-bind headroom of the rank on its bind node: node budget - predicted need (planner), "
            "else what the node can still give.",
            labels=["rank", "node"],
        )
        will = g(
            f"{PREFIX}_rank_will_oom",
            "1 when the rank is predicted to be OOM-killed on its bind node.",
            labels=["rank"],
        )
        budget = g(
            f"{PREFIX}_rank_node_budget_bytes", "The planner's node budget for the rank.", labels=["rank", "node"]
        )
        need = g(f"{PREFIX}_rank_predicted_need_bytes", "The planner's predicted need of the rank.", labels=["rank"])
        headroom = headroom or {}
        for w in engine.workers():
            if w.rank is None:
                continue
            h = headroom.get(w.rank)
            will.add_metric([str(w.rank)], 1.0 if h is not None and h.will_oom else 0.0)
            if h is None:
                continue
            hr.add_metric([str(h.rank), str(h.node)], h.headroom_bytes)
            if h.budget_bytes is not None:
                budget.add_metric([str(h.rank), str(h.node)], h.budget_bytes)
            if h.need_bytes is not None:
                need.add_metric([str(h.rank)], h.need_bytes)
        fams += [hr, will, budget, need]
        if headroom_source:
            src = InfoMetricFamily(f"{PREFIX}_headroom_source", "Where the headroom figures come from.", labels=())
            src.add_metric([], {"source": headroom_source})
            fams.append(src)

        cgs: dict[str, int] = {}
        for p in engine.processes:
            if p.cgroup is not None:
                cgs[p.cgroup.path] = p.cgroup.oom_kill_events
        if cgs:
            cgc = CounterMetricFamily(
                f"{PREFIX}_cgroup_oom_kills",
                "OOM kills the kernel counted in the engine's memory cgroup(s) (memory.events oom_kill).",
            )
            cgc.add_metric([], sum(cgs.values()))
            fams.append(cgc)

    ek = CounterMetricFamily(
        f"{PREFIX}_oom_kills",
        "Kernel OOM kills of the engine's processes seen in the kernel log since the exporter started.",
        labels=["role", "rank"],
    )
    keys = dict(oom.engine)
    for p in engine.processes if engine is not None else ():
        keys.setdefault((p.role.value, _rank_label(p)), 0)
    for k in sorted(keys):
        ek.add_metric(list(k), keys[k])
    hk = CounterMetricFamily(
        f"{PREFIX}_host_oom_kills",
        "Kernel OOM kills of any process on the host since the exporter started, by constraint.",
        labels=["constraint"],
    )
    for k2 in sorted(oom.host):
        hk.add_metric([k2], oom.host[k2])
    fams += [ek, hk]

    fams.append(_gauge(f"{PREFIX}_engine_attached", "1 while an engine is attached.", 1 if engine else 0))
    fams.append(_gauge(f"{PREFIX}_sample_interval_seconds", "The sampling interval asked for.", health.interval))
    fams.append(
        _gauge(f"{PREFIX}_sample_duration_seconds", "Wall seconds the last sample took.", health.sample_seconds)
    )
    fams.append(
        _gauge(f"{PREFIX}_last_sample_timestamp_seconds", "When the last sample was taken.", health.last_sample_at)
    )
    degraded = (len(snap.degraded) if snap is not None else 0) + len(problems)
    fams.append(_gauge(f"{PREFIX}_degraded_reasons", "Things the last sample could not read.", degraded))
    for name, doc, value in (
        ("samples", "Samples taken.", health.samples),
        ("late_samples", "Samples that started late against their deadline (a busy host starves the sampler).",
         health.late_samples),
        ("engine_attaches", "Times an engine was attached (discovery after a restart counts again).",
         health.attaches),
    ):  # fmt: skip
        cf = CounterMetricFamily(f"{PREFIX}_{name}", doc)
        cf.add_metric([], value)
        fams.append(cf)
    return fams


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


# --------------------------------------------------------------------------------------------
# The exporter: a sampler thread and a collector over its latest families
# --------------------------------------------------------------------------------------------


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
        from numatop_llm import __version__

        self.roots = roots
        self.fixed_pid = pid
        self.interval = interval
        self.log = log
        self.version = __version__
        self.reader = SnapshotReader(roots, None)
        live = roots.proc.resolve() == Path("/proc")
        self.oom_watch = KernelOomWatch(kernel_log if live else None)
        self.planner = PlannerBridge() if use_planner else None
        self.remember = remember
        self.health = Health(interval=interval)
        self.oom = OomCounts()
        self.attached_pid: int | None = None
        self.last: Snapshot | None = None
        self._known: dict[int, tuple[str, str]] = {}
        self._families: tuple[Metric, ...] = tuple(
            build_families(None, health=self.health, oom=self.oom, version=self.version)
        )
        self._remembered_at = 0.0
        self._remembered_key: tuple | None = None
        self._planner_logged: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(lambda: self._families))
        from prometheus_client import ProcessCollector

        ProcessCollector(registry=self.registry)
        if self.oom_watch.problem and self.oom_watch.mode != "off":
            log(self.oom_watch.problem)

    # -- attaching ---------------------------------------------------------------------------

    def _attach(self) -> None:
        pid: int | None = None
        if self.fixed_pid is not None:
            # --pid: that process's engine, once; after it exits only node metrics are exported
            if self.health.attaches == 0 and (self.roots.proc / str(self.fixed_pid)).is_dir():
                pid = self.fixed_pid
        else:
            found = discover_engines(self.roots)
            if found:
                from numatop_llm.monitor.sources import pick_engine

                pid = pick_engine(found).root_pid
        if pid is None:
            return
        self.reader.attach(pid)
        self.attached_pid = pid
        self.health.attaches += 1
        self.health.attached_pid = pid
        self.log(f"attached to pid {pid}")

    def _detach(self, why: str) -> None:
        self.log(why)
        self.reader.attach(None)
        self.attached_pid = None
        self.health.attached_pid = None

    # -- one sample --------------------------------------------------------------------------

    def sample_once(self, late_seconds: float = 0.0) -> Snapshot:
        """Take one sample and publish its families. Never raises for machine state."""
        with self._lock:
            t0 = time.perf_counter()
            if self.attached_pid is None:
                self._attach()
            snap = self.reader.read(**CADENCE, late_seconds=late_seconds)
            if snap.engine is None and self.attached_pid is not None:
                self._detach(f"engine pid {self.attached_pid} exited")
                if self.fixed_pid is None:
                    self._attach()
                    if self.attached_pid is not None:
                        snap = self.reader.read(**CADENCE, late_seconds=late_seconds)
            engine = snap.engine
            for p in engine.processes if engine else ():
                self._known[p.pid] = (p.role.value, _rank_label(p))
            if len(self._known) > 4096:
                self._known = dict(list(self._known.items())[-2048:])
            for k in self.oom_watch.poll():
                c = CONSTRAINTS.get(k.constraint, "none")
                self.oom.host[c] = self.oom.host.get(c, 0) + 1
                who = self._known.get(k.pid)
                if who is not None:
                    self.oom.engine[who] = self.oom.engine.get(who, 0) + 1
                    self.log(f"OOM kill of engine pid {k.pid} ({k.task}, {k.kind})")
            problems: list[str] = []
            if self.oom_watch.problem:
                problems.append(self.oom_watch.problem)
            headroom: dict[int, RankHeadroom] | None = None
            source = ""
            if engine is not None and engine.workers():
                planned = self.planner.headroom(engine, snap.topology) if self.planner is not None else None
                if self.planner is not None and self.planner.available and self.planner.problem:
                    problems.append(self.planner.problem)
                    if self.planner.problem != self._planner_logged:
                        self.log(self.planner.problem)
                self._planner_logged = self.planner.problem if self.planner is not None else None
                # the planner's figures where it has them, the node rule for any other bound rank
                headroom = {**fallback_headroom(engine, snap.topology), **(planned or {})}
                source = "planner" if planned else "node_available"
            self.health.samples += 1
            self.health.sample_seconds = time.perf_counter() - t0
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
            if engine is not None and self.remember:
                # for ``numatop-llm explain`` after a -9: at once when the tree changes, else each minute
                key = (engine.root_pid, tuple(sorted(p.pid for p in engine.processes)))
                if key != self._remembered_key or time.monotonic() - self._remembered_at > 60:
                    from numatop_llm.statedir import remember_engine

                    remember_engine(engine, snap.topology, snap.taken_at)
                    self._remembered_at, self._remembered_key = time.monotonic(), key
            return snap

    # -- the sampling thread -----------------------------------------------------------------

    def late_tolerance(self) -> float:
        return max(0.05, 0.1 * self.interval)

    def _run(self, first_in: float) -> None:
        due = time.monotonic() + first_in
        tol = self.late_tolerance()
        while not self._stop.is_set():
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            late = time.monotonic() - due
            is_late = late > tol
            if is_late:
                self.health.late_samples += 1
            try:
                self.sample_once(late_seconds=late if is_late else 0.0)
            except Exception as exc:  # a bug must not silently stop the exporter's samples
                self.log(f"sample failed: {type(exc).__name__}: {exc}")
            due += self.interval
            now = time.monotonic()
            if now > due:  # overran: skip the deadlines already missed, sample at once (late)
                due += ((now - due) // self.interval) * self.interval

    def start(self, first_in: float = 0.0) -> None:
        """Start sampling in a background thread; the first sample is due ``first_in`` seconds from now."""
        self._thread = threading.Thread(target=self._run, args=(first_in,), name="numatop-llm-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling and release descriptors (kmsg, thread stat files)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            self.reader.attach(None)
            self.oom_watch.close()


# --------------------------------------------------------------------------------------------
# Listening
# --------------------------------------------------------------------------------------------


class ListenError(ValueError):
    """The listen address is malformed or cannot be bound; the message is one line for the user."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback) → (host, port)."""
    text = text.strip()
    if text.isdigit():
        host, port_s = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_s = text[1:].partition("]:")
        if not sep:
            raise ListenError(f"bad --listen {text!r}: expected [ADDRESS]:PORT")
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            raise ListenError(f"bad --listen {text!r}: expected HOST:PORT")
        if not host:
            raise ListenError(
                f"bad --listen {text!r}: give a host (127.0.0.1:{port_s} for this machine only, "
                f"0.0.0.0:{port_s} for every interface)"
            )
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ListenError(f"bad --listen {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_s)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(registry: CollectorRegistry, host: str, port: int):
    """Bind and serve ``/metrics`` in a daemon thread; (server, thread, bound port).

    Raises ListenError with one line for a port in use, a privileged port, an unknown address.
    """
    import socket

    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: unknown address ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"cannot listen on {host}:{port}: the port is already in use "
                "(another exporter running?); pick another with --listen HOST:PORT"
            ) from None
        if exc.errno == errno.EACCES:
            raise ListenError(
                f"cannot listen on {host}:{port}: permission denied (ports below 1024 need privileges)"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenError(f"cannot listen on {host}:{port}: no such address on this machine") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server, thread, server.server_address[1]
