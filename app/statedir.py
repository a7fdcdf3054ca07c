"""Where numatop-llm keeps state between runs: ``$XDG_STATE_HOME/numatop-llm`` (journal, last engine)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from probes.models import Engine, Role, Topology


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


def remember_engine(engine: Engine, topology: Topology, seen_at: float, directory: Path | None = None) -> None:
    """Save the last engine seen (best effort: a read-only home is not an error)."""
    try:
        _write_atomic(
            (directory or state_dir()) / "last-engine.json", json.dumps(engine_record(engine, topology, seen_at))
        )
    except OSError:
        pass


def last_engine(directory: Path | None = None) -> dict[str, Any] | None:
    try:
        return json.loads(((directory or state_dir()) / "last-engine.json").read_text())
    except (OSError, ValueError):
        return None
