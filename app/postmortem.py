"""The -9 post-mortem: why did a worker die with SIGKILL? The kernel's OOM report, explained.

Joins what the kernel logged (constraint, nodemask, victim RSS) with what numatop-llm last saw
of the engine (which rank the PID was, its bind node, the node's size) into plain sentences.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.kernel_log import OomKill
from numatop_llm.units import gib as _gib


class Explanation(BaseModel):
    model_config = ConfigDict(frozen=True)

    pid: int
    task: str
    who: str
    constraint: str
    nodes: tuple[int, ...]
    when: str | None
    text: str
    kill: OomKill


def explain_kill(
    kill: OomKill,
    engine: dict[str, Any] | None = None,
    boot_time: float | None = None,
    nodes_now: dict[str, dict[str, Any]] | None = None,
) -> Explanation:
    """One kill in words, using the last engine record when the PID belonged to it.

    ``nodes_now``: node figures read from this machine now (``{"3": {"total_bytes": ...}}``), for
    the node's size when no engine record has it (a process that was never part of an engine).
    """
    proc = None
    if engine:
        proc = next((p for p in engine.get("processes", []) if p.get("pid") == kill.pid), None)
    who = (proc.get("label") or proc.get("role")) if proc else kill.task
    when = None
    if boot_time is not None and kill.uptime_seconds is not None:
        when = time.strftime("%H:%M:%S", time.localtime(boot_time + kill.uptime_seconds))
    nodes = kill.nodemask or (tuple(proc.get("policy_nodes", ())) if proc else ())
    parts = [f"{who} (pid {kill.pid}) was killed by the kernel's OOM killer" + (f" at {when}" if when else "")]
    if kill.constraint == "CONSTRAINT_MEMORY_POLICY":
        node_txt = format_cpulist(nodes) or "?"
        parts.append(f"its memory was strictly bound (membind) to node {node_txt}, and that node ran out")
        if len(nodes) == 1:
            node = ((engine or {}).get("nodes") or {}).get(str(nodes[0])) or (nodes_now or {}).get(str(nodes[0]))
            if node:
                parts.append(f"node {nodes[0]} holds {_gib(node.get('total_bytes'))} in all")
    elif kill.constraint == "CONSTRAINT_MEMCG":
        parts.append(f"its cgroup {kill.oom_memcg or kill.task_memcg or '?'} hit its memory limit")
    elif kill.constraint == "CONSTRAINT_CPUSET":
        parts.append(f"its cpuset allows memory only on node(s) {format_cpulist(kill.mems_allowed) or '?'}")
    else:
        parts.append("the whole machine was out of memory")
    parts.append(f"it had {_gib(kill.rss_bytes)} resident (anon {_gib(kill.anon_rss_bytes)})")
    if proc and proc.get("rank") is not None and engine:
        cfg = engine.get("config", {})
        parts.append(
            f"rank {proc['rank']} of TP={cfg.get('tensor_parallel_size', 1)} PP={cfg.get('pipeline_parallel_size', 1)}"
            + (f", VLLM_CPU_KVCACHE_SPACE={cfg['kv_cache_gib']:g} GiB" if cfg.get("kv_cache_gib") is not None else "")
        )
    text = "; ".join(parts) + "."
    return Explanation(
        pid=kill.pid, task=kill.task, who=who, constraint=kill.constraint, nodes=nodes, when=when, text=text, kill=kill
    )


def relevant_kills(kills: list[OomKill], pids: set[int] | None) -> list[OomKill]:
    """The kills of the given PIDs (all kills when ``pids`` is None), newest last."""
    if pids is None:
        return kills
    return [k for k in kills if k.pid in pids]
