"""The planner's per-worker need against real vLLM CPU workers (TP 1 and 2, KV 1 and 2 GiB).

Predicted need (weights shard + KV + runtime overhead) must be within ±10% or ±64 MiB of the
worker's measured RSS after a warm-up completion. Locally the tests skip when the testbed is not
built; in CI its fixture fails instead. Runtime: the TP=1/TP=2 KV 1 GiB cases share the session's
warm engines (seconds); the KV 2 GiB case starts two engines of its own (~1-2 min on 2 cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from numatop_llm.planner import PlanConfig, load_model, make_plan
from numatop_llm.probes.roots import LIVE
from numatop_llm.probes.topology import read_topology

pytestmark = pytest.mark.vllm

MIB = 2**20
TOLERANCE = 0.10
TOLERANCE_BYTES = 64 * MIB


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _compare(engine, kv_gib: float) -> list[tuple[str, int, int, int, float]]:
    """(worker, tp, predicted, measured, error) per worker of a running testbed engine."""
    model = load_model(engine.model)
    plan = make_plan(
        model,
        read_topology(LIVE),
        PlanConfig(tp=engine.tp, bind=engine.bind, kv_gib=kv_gib, max_model_len=512, vllm_version="0.32.0"),
    )
    predicted = {r.label: r.need_bytes for r in plan.ranks}
    workers = engine.worker_pids()
    assert set(workers) == set(predicted), (workers, predicted)
    time.sleep(1.0)  # let the allocator settle after the warm-up completion
    rows = []
    for label, pid in sorted(workers.items()):
        measured = _rss(pid)
        rows.append((label, engine.tp, predicted[label], measured, (predicted[label] - measured) / measured))
    return rows


def _report(kv_gib: float, rows) -> None:
    for label, tp, pred, meas, err in rows:
        print(
            f"[calibration] TP={tp} KV={kv_gib:g} GiB {label:<11} predicted {pred / MIB:8.1f} MiB  "
            f"measured {meas / MIB:8.1f} MiB  error {err:+.1%} ({(pred - meas) / MIB:+.1f} MiB)",
            file=sys.stderr,
        )


def _assert_close(rows) -> None:
    for label, tp, pred, meas, _err in rows:
        assert abs(pred - meas) <= max(TOLERANCE * meas, TOLERANCE_BYTES), (
            f"TP={tp} {label}: predicted {pred / MIB:.0f} MiB, measured {meas / MIB:.0f} MiB"
        )


@pytest.mark.parametrize("fixture", ["vllm_engine_tp1", "vllm_engine_tp2"])
def test_predicted_worker_need_matches_rss_kv1(request, fixture):
    engine = request.getfixturevalue(fixture)
    rows = _compare(engine, engine.kv_gib)
    _report(engine.kv_gib, rows)
    _assert_close(rows)


def test_predicted_worker_need_matches_rss_kv2(vllm_engine_factory):
    for tp in (1, 2):
        engine = vllm_engine_factory(tp=tp, kv_gib=2, warm_up=True)
        try:
            rows = _compare(engine, 2)
        finally:
            engine.stop()
        _report(2, rows)
        _assert_close(rows)


def test_plan_from_a_running_engine(vllm_engine_tp2):
    """``numatop-llm plan --pid`` takes the model and configuration from the engine's argv and environ."""
    import json
    import subprocess

    engine = vllm_engine_tp2
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        [sys.executable, "-m", "numatop_llm", "plan", "--pid", str(engine.pid), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo,
    )
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert [x["rank"] for x in out["ranks"]] == [0, 1]
    # each worker binds memory to the node of the first CPU of its list (0|1 here: both on node 0)
    from numatop_llm.probes.cpulist import format_cpulist, parse_cpulist

    lists = [sorted(parse_cpulist(x)) for x in engine.bind.split("|")]
    cpu_node = read_topology(LIVE).cpu_to_node()
    assert [x["cpus"] for x in out["ranks"]] == [format_cpulist(c) for c in lists]
    assert [x["node"] for x in out["ranks"]] == [cpu_node[c[0]] for c in lists]
    assert all(x["kv_bytes"] == int(engine.kv_gib * 2**30) for x in out["ranks"])
    weights = load_model(engine.model).weight_bytes
    assert all(0 < x["weights_bytes"] < weights for x in out["ranks"])
