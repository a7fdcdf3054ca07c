"""Diagnoses: the sentences an operator reads, from snapshots that show each problem."""

from __future__ import annotations

from numatop_llm.monitor.diagnoses import diagnose
from numatop_llm.monitor.planbridge import PlanVerdict
from numatop_llm.monitor.session import MonitorSample
from numatop_llm.monitor.state import AppState
from numatop_llm.probes.models import NodeMemory, Policy, Snapshot, Thread
from tests.tui_support import demo_frames, demo_upto

GIB = 2**30


def _with_worker(snap: Snapshot, label: str, **update) -> Snapshot:
    procs = tuple(p.model_copy(update=update) if p.label == label else p for p in snap.engine.processes)
    return snap.model_copy(update={"engine": snap.engine.model_copy(update={"processes": procs})})


def _texts(snap: Snapshot, state: AppState | None = None) -> list[str]:
    return [f.text for f in diagnose(snap, state)]


def test_a_healthy_sample_says_nothing_alarming() -> None:
    snap = demo_frames()[10]
    assert [f for f in diagnose(snap) if f.severity != "info"] == []


def test_bound_node_running_out_with_time_to_the_kill() -> None:
    state = AppState()
    for s in demo_upto(29):
        state.update(MonitorSample(s, PlanVerdict()))  # no planner figures: the trend alone
    f = next(f for f in state.findings if f.code == "bind-full")
    assert f.severity == "critical" and f.node == 0
    assert "Worker_TP0 binds memory to node 0, which has 0.8 GiB of 31.2 GiB left, growing 1.1 GiB/s" in f.text
    assert "OOM kill (-9) in ~1 s" in f.text


def test_memory_off_its_node() -> None:
    snap = demo_frames()[20]
    tp0 = next(p for p in snap.engine.processes if p.label == "Worker_TP0")
    moved = dict(tp0.node_bytes)
    moved[4] = 3 * GIB
    texts = _texts(_with_worker(snap, "Worker_TP0", node_bytes=moved))
    assert any(t.startswith("Worker_TP0 has 3.0 GiB") and "off node 0, most on node 4" in t for t in texts), texts


def test_two_ranks_on_one_node_and_a_bind_that_threads_do_not_follow() -> None:
    snap = demo_frames()[20]
    tp1 = next(p for p in snap.engine.processes if p.label == "Worker_TP1")
    shared = _with_worker(snap, "Worker_TP1", policy=Policy(mode="bind", nodes=(0,), text="bind:0"))
    texts = _texts(shared)
    assert "Worker_TP0 and Worker_TP1 share node 0: its budget must hold both" in texts
    # TP1's memory is bound to node 0 but its threads run on node 1
    assert "Worker_TP1 binds memory to node 0 but most threads run on node 1" in texts
    assert len(tp1.threads) == 47


def test_threads_off_node_are_counted_by_node() -> None:
    snap = demo_frames()[20]
    tp0 = next(p for p in snap.engine.processes if p.label == "Worker_TP0")
    ths = [Thread(**{**t.model_dump(), "cpu": 50, "node": 3}) if i < 4 else t for i, t in enumerate(tp0.threads)]
    texts = _texts(_with_worker(snap, "Worker_TP0", threads=tuple(ths)))
    assert "4 threads of Worker_TP0 run on node 3, memory is on node 0" in texts


def test_kv_unset_nobind_full_node_lazy_memory_and_permission_notes() -> None:
    snap = demo_frames()[20]
    cfg = snap.engine.config.model_copy(update={"kv_cache_gib": None, "omp_threads_bind": "nobind"})
    nodes = list(snap.topology.nodes)
    m = nodes[5].memory
    nodes[5] = nodes[5].model_copy(
        update={"memory": NodeMemory(total_bytes=m.total_bytes, free_bytes=int(0.01 * m.total_bytes))}
    )
    topo = snap.topology.model_copy(update={"nodes": tuple(nodes), "system_mem_total_bytes": 10 * 256 * GIB})
    odd = snap.model_copy(
        update={
            "engine": snap.engine.model_copy(update={"config": cfg}),
            "topology": topo,
            "degraded": ("4377: permission denied: /proc/4377/numa_maps",),
        }
    )
    by_code = {f.code: f for f in diagnose(odd)}
    assert by_code["kv-unset"].text == "VLLM_CPU_KVCACHE_SPACE unset: KV cache sized from node memory"
    assert "threads are not pinned" in by_code["nobind"].text
    assert by_code["node-full"].text == "node 5 is 99% full (0.3 GiB available)"
    assert "memory is onlined lazily" in by_code["lazy-online"].text
    assert "run as the engine's user or root" in by_code["permission"].text
    # most severe first
    sev = [f.rank for f in diagnose(odd)]
    assert sev == sorted(sev)
