"""Where numatop-llm keeps state between runs: ``$XDG_STATE_HOME/numatop-llm`` (journal, last engine)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from numatop_llm.probes.models import Engine, Role, Topology


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "numatop-llm"


def _write_atomic(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def engine_record(engine: Engine, topology: Topology, seen_at: float) -> dict[str, Any]:
    """What the post-mortem needs to know about an engine once it is gone."""
    procs = []
    for p in engine.processes:
        procs.append(
            {
                "pid": p.pid,
                "role": p.role.value,
                "label": p.label,
                "rank": p.rank,
                "policy": p.policy.text,
                "policy_nodes": list(p.policy.nodes),
                "rss_bytes": p.rss_bytes,
                "node_bytes": {str(k): v for k, v in p.node_bytes.items()},
                "thread_nodes": {str(k): v for k, v in p.thread_nodes.items()},
            }
        )
    return {
        "seen_at": seen_at,
        "root_pid": engine.root_pid,
        "config": engine.config.model_dump(mode="json"),
        "processes": procs,
        "nodes": {
            str(n.id): {"total_bytes": n.total_bytes, "free_bytes": n.free_bytes} for n in topology.nodes if n.memory
        },
        "workers": sum(1 for p in engine.processes if p.role == Role.WORKER),
    }


#: how many processes that left a still-running engine its record keeps
MAX_GONE = 64


def _boot_time() -> float | None:
    from numatop_llm.probes.kernel_log import boot_time

    return boot_time()


def merge_gone(previous: dict[str, Any] | None, record: dict[str, Any], boot: float | None = None) -> dict[str, Any]:
    """``record`` plus the processes of ``previous`` (the same engine, this boot) that have gone.

    A worker killed with -9 leaves the tree while the API server still runs; a monitor sampling
    then must not forget it, or the post-mortem cannot say which rank the kernel killed.
    """
    if not previous or previous.get("root_pid") != record.get("root_pid"):
        return record
    if boot is not None and float(previous.get("seen_at") or 0) < boot:
        return record  # the same PID in an earlier boot: another engine
    live = {p.get("pid") for p in record["processes"]}
    gone = [dict(p, gone=True) for p in previous.get("processes", []) if p.get("pid") not in live]
    if gone:
        record = dict(record, processes=record["processes"] + gone[-MAX_GONE:])
    return record


def remember_engine(engine: Engine, topology: Topology, seen_at: float, directory: Path | None = None) -> None:
    """Save the last engine seen (best effort: a read-only home is not an error).

    Processes that left the same engine since the last save stay in the record, marked ``gone``.
    """
    record = merge_gone(last_engine(directory), engine_record(engine, topology, seen_at), _boot_time())
    try:
        _write_atomic((directory or state_dir()) / "last-engine.json", json.dumps(record))
    except OSError:
        pass


def last_engine(directory: Path | None = None) -> dict[str, Any] | None:
    try:
        return json.loads(((directory or state_dir()) / "last-engine.json").read_text())
    except (OSError, ValueError):
        return None
