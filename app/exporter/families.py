"""Metric families from one monitor sample: what the dashboard knows, as Prometheus metrics.

Labels are kept low-cardinality: ``node``, ``role``, ``rank`` (and a few config labels on the
``_info`` metrics). Nothing is labelled per thread or per PID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from numatop_llm.exporter.headroom import RankHeadroom
from numatop_llm.probes.models import Process, Role, Snapshot

PREFIX = "numatop_llm"

#: kernel OOM constraints, as label values (pre-created at zero so ``increase()`` sees the first kill)
CONSTRAINTS = {
    "CONSTRAINT_MEMORY_POLICY": "memory_policy",
    "CONSTRAINT_MEMCG": "memcg",
    "CONSTRAINT_CPUSET": "cpuset",
    "CONSTRAINT_NONE": "none",
}


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
