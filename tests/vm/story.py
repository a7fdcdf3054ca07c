"""The seed story, scaled down, run inside a guest: the planner's verdict against the kernel's.

Runs in the 8-node guest (``seed8``: 2 sockets, 8 nodes of 512 MiB). Every guest node stands for a
node ``SCALE`` times larger (512 MiB × 64 = 32 GiB, the seed box's node). For each configuration:

1. read the guest's topology and node memory now (probes), multiply every node's memory figures
   by ``SCALE``, and plan the seed model (DeepSeek-R1-Distill-Qwen-32B) on it with ``make_plan``;
2. start one process per rank, as vLLM's workers run: memory strictly bound to the rank's node
   (``numactl --membind``), threads on the rank's CPUs, allocating and touching the rank's
   ``need_bytes / SCALE`` (weights + KV + runtime, scaled back to the guest);
3. wait until every rank holds its memory or has died; report how each ended.

Prints one JSON object per configuration on stdout. Usage (in the guest, from the repository):
``python -m tests.vm.story '[{"tp": 2, "vllm_version": "0.8.5"}, ...]'``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from numatop_llm.planner import PlanConfig, make_plan, seed_model
from numatop_llm.probes.cpulist import format_cpulist
from numatop_llm.probes.models import NodeMemory, Topology
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.topology import read_topology

SCALE = 64
HOG = Path(__file__).resolve().parent / "hog.py"
#: how long a rank may take to touch its memory in the guest (TCG is slow)
RANK_DEADLINE = 240.0


def scaled(topology: Topology, factor: int) -> Topology:
    """The same machine with every node's memory ``factor`` times larger."""
    nodes = []
    for n in topology.nodes:
        mem = n.memory
        if mem is not None:
            mem = mem.model_copy(update={f: getattr(mem, f) * factor for f in NodeMemory.byte_fields()})
        nodes.append(n.model_copy(update={"memory": mem}))
    return topology.model_copy(
        update={"nodes": tuple(nodes), "system_mem_total_bytes": (topology.system_mem_total_bytes or 0) * factor}
    )


def _progress(path: Path) -> int:
    try:
        lines = path.read_text().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines else 0


def run_config(cfg: dict, workdir: Path) -> dict:
    config = PlanConfig(**cfg)
    topo = read_topology(SysRoots())
    plan = make_plan(seed_model(), scaled(topo, SCALE), config)
    out: dict = {"config": cfg, "summary": config.summary(), "verdict": plan.verdict, "errors": list(plan.errors)}
    ranks = []
    procs = []
    for r in plan.ranks:
        alloc = r.need_bytes // SCALE
        ready, progress = workdir / f"r{r.rank}.ready", workdir / f"r{r.rank}.progress"
        cmd = ["numactl", f"--membind={r.node}", f"--physcpubind={format_cpulist(r.cpus)}"]
        cmd += [sys.executable, "-I", "-S", str(HOG), "--bytes", str(alloc), "--threads", "2"]
        cmd += ["--ready", str(ready), "--progress", str(progress), "--hold", str(RANK_DEADLINE + 60)]
        err = (workdir / f"r{r.rank}.err").open("w")
        procs.append((subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err), ready, progress))
        err.close()
        ranks.append(
            {
                "rank": r.rank,
                "label": r.label,
                "node": r.node,
                "cpus": list(r.cpus),
                "verdict": r.verdict,
                "need_bytes": r.need_bytes,
                "node_budget_bytes": r.node_budget_bytes,
                "node_available_bytes": r.node_available_bytes,
                "alloc_bytes": alloc,
                "guest_budget_bytes": r.node_budget_bytes // SCALE,
                "reason": r.reason,
            }
        )
    deadline = time.monotonic() + RANK_DEADLINE
    pending = set(range(len(procs)))
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            p, ready, _ = procs[i]
            if ready.exists() or p.poll() is not None:
                pending.discard(i)
        time.sleep(0.1)
    for (p, ready, progress), rk in zip(procs, ranks, strict=True):
        rk["pid"] = p.pid
        rk["held"] = ready.exists() and p.poll() is None
        rk["touched_bytes"] = _progress(progress)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait(10)
        # 137 is how a shell shows it; Popen gives -9
        rk["returncode"] = rc
        rk["stderr"] = (workdir / f"r{rk['rank']}.err").read_text(errors="replace")[-500:]
        rk["killed"] = rc == -signal.SIGKILL
    out["ranks"] = ranks
    out["timed_out"] = bool(pending)
    return out


def main(argv: list[str]) -> int:
    configs = json.loads(argv[0])
    for cfg in configs:
        with tempfile.TemporaryDirectory(prefix="story-") as tmp:
            t0 = time.monotonic()
            res = run_config(cfg, Path(tmp))
            res["seconds"] = round(time.monotonic() - t0, 2)
        print(json.dumps(res), flush=True)
        # let the kernel settle (reclaim, kmsg) before the next configuration reads node memory
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main(sys.argv[1:]))
