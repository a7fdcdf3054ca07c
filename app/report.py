"""Plain renderings of snapshots for the command line: the JSON contract and a text summary."""

from __future__ import annotations

from typing import Any

from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import Process, Snapshot
from numatop_llm.units import gib


def process_json(p: Process) -> dict[str, Any]:
    return {
        "pid": p.pid,
        "ppid": p.ppid,
        "role": p.role.value,
        "rank": p.rank,
        "label": p.label,
        "tp_rank": p.tp_rank,
        "pp_rank": p.pp_rank,
        "cmdline": list(p.cmdline),
        "user": p.user,
        "exe": p.exe,
        "cwd": p.cwd,
        "rss_bytes": p.rss_bytes,
        "node_bytes": {str(k): v for k, v in p.node_bytes.items()},
        "policy": p.policy.text,
        "cpus_allowed": list(p.cpus_allowed),
        "env": p.env,
        "cgroup": p.cgroup.model_dump(mode="json") if p.cgroup else None,
        "threads": [
            {
                "tid": t.tid,
                "comm": t.comm,
                "state": t.state,
                "cpu": t.cpu,
                "node": t.node,
                "allowed_cpus": list(t.allowed_cpus),
                "cpu_percent": t.cpu_percent,
            }
            for t in p.threads
        ],
        "degraded": list(p.degraded),
    }


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """The documented JSON contract of ``numatop-llm snapshot --json`` (plus extra fields)."""
    topo = snap.topology
    out: dict[str, Any] = {
        "host": snap.host,
        "kernel": snap.kernel,
        "taken_at": snap.taken_at,
        "nodes": [
            {
                "id": n.id,
                "cpus": list(n.cpus),
                "total_bytes": n.total_bytes,
                "free_bytes": n.free_bytes,
                "distances": {str(k): v for k, v in n.distances.items()},
                "package": n.package,
                "memory": n.memory.model_dump(mode="json") if n.memory else None,
            }
            for n in topo.nodes
        ],
        "cpus_online": list(topo.cpus_online),
        "cpus_offline": list(topo.cpus_offline),
        "packages": [{"id": p.id, "cpus": list(p.cpus), "nodes": list(p.nodes)} for p in topo.packages],
        "cores": topo.num_cores,
        "system_mem_total_bytes": topo.system_mem_total_bytes,
        "degraded": list(snap.degraded),
        "sample_seconds": round(snap.sample_seconds, 6),
    }
    if snap.engine is not None:
        e = snap.engine
        out["engine"] = {
            "root_pid": e.root_pid,
            "is_vllm": e.is_vllm,
            "config": e.config.model_dump(mode="json"),
        }
        out["processes"] = [process_json(p) for p in e.processes]
    return out


def snapshot_text(snap: Snapshot) -> str:
    """A readable summary for a terminal or a log."""
    topo = snap.topology
    lines = [
        f"{snap.host} · Linux {snap.kernel} · {len(topo.nodes)} NUMA node(s), "
        f"{len(topo.packages)} socket(s), {topo.num_cores} cores, {len(topo.cpus_online)} CPUs online"
        + (f", offline {format_cpulist(topo.cpus_offline)}" if topo.cpus_offline else ""),
        "",
        f"{'node':>4}  {'cpus':<20} {'total':>10} {'free':>10}  distances",
    ]
    for n in topo.nodes:
        d = " ".join(str(n.distances[k]) for k in sorted(n.distances))
        lines.append(
            f"{n.id:>4}  {format_cpulist(n.cpus) or '(no CPUs)':<20} "
            f"{gib(n.total_bytes):>10} {gib(n.free_bytes):>10}  {d}"
        )
    if snap.engine is not None:
        e = snap.engine
        c = e.config
        lines += [
            "",
            f"engine root {e.root_pid}"
            + (f" · model {c.model}" if c.model else "")
            + (f" · TP={c.tensor_parallel_size} PP={c.pipeline_parallel_size}" if e.is_vllm else "")
            + (f" · bind {c.omp_threads_bind}" if c.omp_threads_bind else "")
            + (f" · KV {c.kv_cache_gib} GiB" if c.kv_cache_gib is not None else ""),
        ]
        lines.append(f"{'pid':>7}  {'role':<12} {'rank':>4} {'rss':>10}  {'policy':<14} {'threads':>7}  per node")
        for p in e.processes:
            per = " ".join(f"N{k}={gib(v)}" for k, v in sorted(p.node_bytes.items()))
            lines.append(
                f"{p.pid:>7}  {(p.label or p.role.value):<12} {'' if p.rank is None else p.rank:>4} "
                f"{gib(p.rss_bytes):>10}  {p.policy.text:<14} {len(p.threads):>7}  {per}"
            )
    if snap.degraded:
        lines += ["", "could not read:"] + [f"  - {d}" for d in snap.degraded]
    return "\n".join(lines)
