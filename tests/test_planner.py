"""Planner verdicts: the seed story, every vLLM error message, fixture topologies, the solver, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numatop_llm.demo.seedbox import NODE_BASE_USED_KIB, write_seed_sysfs
from numatop_llm.planner import PlanConfig, config_from_engine, make_plan, seed_model, solve
from numatop_llm.planner.model import model_from_config
from numatop_llm.probes.models import EngineConfig
from numatop_llm.probes.topology import read_topology
from tests.conftest import fixture_dirs, fixture_roots, require_fixtures

GIB = 2**30
REPO = Path(__file__).resolve().parent.parent
TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 4096,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def seed():
    return seed_model()


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return read_topology(write_seed_sysfs(tmp_path_factory.mktemp("seedbox")))


def plan(model, topo, **kw):
    return make_plan(model, topo, PlanConfig(**kw))


# --------------------------------------------------------------------------------------------
# the seed story
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "0.8.4"], ids=["vllm-0.32", "vllm-0.8"])
@pytest.mark.parametrize("kv", [None, 1, 4])
def test_seed_tp2_both_ranks_oom_whatever_the_kv(seed, box, version, kv):
    p = plan(seed, box, tp=2, kv_gib=kv, vllm_version=version)
    assert p.verdict == "oom" and not p.fits
    assert [r.verdict for r in p.ranks] == ["oom", "oom"]
    assert [r.node for r in p.ranks] == [0, 1]
    for r in p.ranks:
        assert r.weights_bytes / GIB == pytest.approx(30.5, abs=0.05)
        assert r.weights_bytes + r.overhead_bytes > r.node_budget_bytes  # the weights alone overflow
        assert r.max_kv_bytes == 0
    text = " ".join(p.findings)
    assert "Worker_TP1 binds memory to node 1" in text and "OOM-killed (-9)" in text
    assert "shrinking the KV cache cannot help" in text


@pytest.mark.parametrize("tp, weights_gib", [(4, 15.3), (8, 7.6)])
def test_seed_tp4_and_tp8_fit_with_a_computed_max_kv(seed, box, tp, weights_gib):
    p = plan(seed, box, tp=tp)
    assert p.verdict == "fits", p.errors
    assert len(p.ranks) == tp and [r.node for r in p.ranks] == list(range(tp))
    for r in p.ranks:
        assert r.weights_bytes / GIB == pytest.approx(weights_gib, abs=0.05)
        assert r.kv_auto and r.kv_bytes > 0
        assert r.need_bytes <= r.node_budget_bytes
        assert r.max_kv_bytes >= r.kv_bytes
        assert len(r.cpus) == 14  # 15 cores per node, one reserved for the engine process
    # the max KV is a real limit: one GiB more than it is refused (0.32) or OOM-killed (0.8)
    worst = min(p.ranks, key=lambda r: r.max_kv_bytes)
    over = worst.max_kv_gib + 1
    assert plan(seed, box, tp=tp, kv_gib=worst.max_kv_gib, max_model_len=8192).fits
    refused = plan(seed, box, tp=tp, kv_gib=over, max_model_len=8192)
    assert refused.verdict == "error" and "on kv cache allocation is less than requested memory" in refused.errors[0]
    killed = plan(seed, box, tp=tp, kv_gib=over, max_model_len=8192, vllm_version="0.8.4")
    assert killed.verdict == "oom"
    assert any("max KV that fits" in f and f"VLLM_CPU_KVCACHE_SPACE={worst.max_kv_gib}" in f for f in p.findings)


def test_seed_tp16_refused_like_vllm(seed, box):
    p = plan(seed, box, tp=16)
    assert p.verdict == "error"
    assert p.errors[0] == (
        "ValueError: Total number of attention heads (40) must be divisible by tensor parallel size (16)."
    )
    assert p.errors[1] == (
        "AssertionError: Not enough allowed NUMA nodes to bind threads of 16 local CPUWorkers. "
        "Allowed NUMA nodes are [0, 1, 2, 3, 4, 5, 6, 7]. Please try to bind threads manually or decrease DP/TP/PP."
    )


def test_seed_kv_shrinking_alone_never_helps_at_tp2(seed, box):
    for kv in range(0, 31, 2):
        assert not plan(seed, box, tp=2, kv_gib=kv).fits


def test_seed_tp4_reserved_cpus_and_numbers(seed, box):
    p = plan(seed, box, tp=4)
    assert p.reserved_cpus == (14, 29, 44, 59)
    assert p.ranks[0].cpus == tuple(range(14))
    q = plan(seed, box, tp=4, reserved_cpus=6)
    # 6 over 4 ranks: one each, the remainder from the last ranks
    assert [len(r.cpus) for r in q.ranks] == [14, 14, 13, 13]
    assert plan(seed, box, tp=4, reserved_cpus=0).usable_cpus == 60


# --------------------------------------------------------------------------------------------
# every error vLLM raises (same words)
# --------------------------------------------------------------------------------------------


def test_error_kv_heads_intermediate_not_divisible(seed, box):
    p = plan(seed, box, tp=5, bind="0-5|15-20|30-35|45-50|60-65")
    assert "AssertionError: 8 is not divisible by 5" in p.errors
    assert "AssertionError: 27648 is not divisible by 5" in p.errors


def test_error_wrong_number_of_bind_lists(seed, box):
    p = plan(seed, box, tp=2, bind="0-14")
    assert p.verdict == "error"
    assert p.errors == ("AssertionError: Given number of CPU id list ['0-14'] doesn't match local world size 2.",)


def test_error_bind_list_not_numbers(seed, box):
    p = plan(seed, box, tp=2, bind="0-x|15-29")
    assert p.errors == ("ValueError: invalid literal for int() with base 10: 'x'",)


def test_error_cpus_that_do_not_exist(seed, box):
    p = plan(seed, box, tp=2, bind="0-14|200-214")
    assert p.verdict == "error"
    assert "rank 1: CPU list '200-214' names CPUs that are not online here (200-214; online: 0-119)" in p.errors[0]


def test_error_kv_not_a_whole_number(seed, box):
    p = plan(seed, box, tp=4, kv_gib=1.5)
    assert p.verdict == "error"
    assert p.errors[0].startswith("ValueError: invalid literal for int() with base 10: '1.5'")


def test_error_startup_memory_check(seed, tmp_path):
    used = list(NODE_BASE_USED_KIB)
    used[2] = 8 * 2**20  # 8 GiB used on node 2 by something else
    topo = read_topology(write_seed_sysfs(tmp_path, used_kib=used))
    p = make_plan(seed, topo, PlanConfig(tp=4))
    assert p.verdict == "error" and p.ranks[2].verdict == "error"
    assert p.errors[0].startswith("ValueError: Available memory on node 2 (")
    assert "on startup is less than desired CPU memory utilization (0.92, 28.94 GiB)" in p.errors[0]
    # the same machine with an explicit KV: vLLM skips the start-up check and sizes from what is left
    q = make_plan(seed, topo, PlanConfig(tp=4, kv_gib=4, max_model_len=8192))
    assert q.fits
    assert q.ranks[2].max_kv_bytes < q.ranks[1].max_kv_bytes - 7 * GIB


def test_error_explicit_kv_larger_than_node(seed, box):
    p = plan(seed, box, tp=4, kv_gib=20)
    assert p.errors[0].startswith("ValueError: Available memory on node 0 (")
    assert p.errors[0].endswith(
        "on kv cache allocation is less than requested memory for kv (20.0 GiB). Decrease --kv-cache-memory-bytes, "
        "VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory used by other processes."
    )


def test_error_auto_kv_nothing_left(seed, box):
    p = plan(seed, box, tp=4, gpu_memory_utilization=0.5)
    assert p.verdict == "error"
    assert "on kv cache allocation is less than requested memory for kv (-1.17/15.6 GiB)" in p.errors[0]


def test_error_max_model_len_does_not_fit(seed, box):
    p = plan(seed, box, tp=8, kv_gib=1)
    assert p.verdict == "error"
    assert p.errors[0].startswith(
        "ValueError: To serve at least one request with the model's max seq len (131072), (4.0 GiB KV cache is "
        "needed, which is larger than the available KV cache memory (1.0 GiB). Based on the available memory, the "
        "estimated maximum model length is 32640."
    )
    assert plan(seed, box, tp=8, kv_gib=1, max_model_len=32640).fits
    assert not plan(seed, box, tp=8, kv_gib=1, max_model_len=32641).fits


def test_error_kv_zero_and_legacy_default(seed, box):
    p = plan(seed, box, tp=8, kv_gib=0)
    assert p.errors[0].startswith("ValueError: No available memory for the cache blocks.")
    legacy = plan(seed, box, tp=8, kv_gib=0, vllm_version="0.8.4", max_model_len=65536)
    assert legacy.fits and legacy.ranks[0].kv_bytes == 4 * GIB  # 0 means the 4 GiB default there
    short = plan(seed, box, tp=4, vllm_version="0.8.4")
    assert short.errors[0].startswith("ValueError: The model's max seq len (131072) is larger than the maximum")


def test_nobind_binds_everyone_to_the_first_node_in_032(seed, box):
    p = plan(seed, box, tp=4, bind="nobind")
    assert [r.node for r in p.ranks] == [0, 0, 0, 0]
    assert all(r.shares_node_with for r in p.ranks)
    assert p.verdict == "oom"
    assert any("nobind still binds memory" in f for f in p.findings)
    # budgets count every rank on the node: budget = available − the others' needs
    r0 = p.ranks[0]
    others = sum(r.need_bytes for r in p.ranks[1:])
    assert r0.node_budget_bytes == r0.node_available_bytes - others


def test_nobind_spills_by_first_touch_in_legacy(seed, box):
    tiny = model_from_config(TINY)
    p = plan(tiny, box, tp=2, bind="nobind", vllm_version="0.8.4", kv_gib=40, max_model_len=2048)
    assert p.verdict == "spills"
    r = p.ranks[0]
    assert r.remote_bytes > 9 * GIB and r.node == 0
    assert p.ranks[1].node == 1


def test_explicit_list_across_two_nodes_is_flagged(seed, box):
    p = plan(seed, box, tp=4, bind="10-19|30-44|45-59|60-74", kv_gib=8, max_model_len=8192)
    assert p.ranks[0].node == 0 and p.ranks[0].cpu_nodes == (0, 1)
    assert any("Worker_TP0's threads run on nodes 0, 1 but its memory is bound to node 0" in f for f in p.findings)


def test_two_ranks_per_node_share_the_budget(box):
    tiny = model_from_config(TINY)
    p = plan(tiny, box, tp=2, bind="0-6|7-13", kv_gib=10, max_model_len=2048)
    assert [r.node for r in p.ranks] == [0, 0]
    assert p.ranks[0].shares_node_with == (1,) and p.ranks[1].shares_node_with == (0,)
    assert p.fits
    # each worker checks its KV against the node before any KV is allocated: both pass, then 2 × 15 GiB collide
    big = plan(tiny, box, tp=2, bind="0-6|7-13", kv_gib=15, max_model_len=2048)
    assert big.verdict == "oom" and [r.verdict for r in big.ranks] == ["oom", "oom"]
    assert big.ranks[0].node_budget_bytes < big.ranks[0].need_bytes


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([4, 8]), st.integers(1, 25), st.integers(1, 25), st.sampled_from([None, "0.8.4"]))
def test_need_and_verdict_monotone_in_kv(tp, a, b, version):
    seed = seed_model()
    box = _box()
    lo, hi = sorted((a, b))
    p_lo = make_plan(seed, box, PlanConfig(tp=tp, kv_gib=lo, max_model_len=4096, vllm_version=version))
    p_hi = make_plan(seed, box, PlanConfig(tp=tp, kv_gib=hi, max_model_len=4096, vllm_version=version))
    for x, y in zip(p_lo.ranks, p_hi.ranks, strict=True):
        assert x.need_bytes <= y.need_bytes
        assert x.weights_bytes == y.weights_bytes and x.overhead_bytes == y.overhead_bytes
    rank = {"fits": 0, "spills": 1, "oom": 2, "error": 3}
    assert rank[p_lo.verdict] <= rank[p_hi.verdict]


_BOX = []


def _box():
    if not _BOX:
        from numatop_llm.demo.seedbox import seed_topology

        _BOX.append(seed_topology())
    return _BOX[0]


# --------------------------------------------------------------------------------------------
# gathered topologies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", fixture_dirs(), ids=lambda p: p.name)
def test_fixture_topologies_plan_without_raising(path):
    require_fixtures()
    topo = read_topology(fixture_roots(path))
    tiny = model_from_config(TINY)
    for tp in (1, 2, 4):
        for bind in ("auto", "nobind"):
            p = make_plan(tiny, topo, PlanConfig(tp=tp, bind=bind, kv_gib=1, max_model_len=2048))
            assert p.verdict in ("fits", "oom", "spills", "error")
            assert json.dumps(p.to_json())


def _fixture(name):
    require_fixtures()
    d = next((p for p in fixture_dirs() if p.name == name), None)
    if d is None:
        pytest.skip(f"{name} not in the shared fixtures")
    return read_topology(fixture_roots(d))


def test_fixture_sparse_node_ids():
    topo = _fixture("48amd64-4pa2n6c-sparse")
    p = make_plan(model_from_config(TINY), topo, PlanConfig(tp=4, kv_gib=1, max_model_len=2048))
    assert p.fits
    assert [r.node for r in p.ranks] == [0, 1, 2, 33]


def test_fixture_memory_only_nodes_get_auto_ranks_without_cpus():
    topo = _fixture("fakememinitiators-1np2c+1npp+gi")
    p = make_plan(model_from_config(TINY), topo, PlanConfig(tp=1, kv_gib=1, max_model_len=2048))
    assert p.verdict == "error"
    assert "auto bind gives rank 0 node 5, which has no usable CPU" in p.errors[0]


def test_fixture_one_node_refuses_tp2_auto_but_takes_lists():
    topo = _fixture("20em64t-hybrid-1p6c2t+2ca4co1t")
    tiny = model_from_config(TINY)
    p = make_plan(tiny, topo, PlanConfig(tp=2, kv_gib=1, max_model_len=2048))
    assert "Allowed NUMA nodes are [0]" in p.errors[0]
    q = make_plan(tiny, topo, PlanConfig(tp=2, bind="0-5|6-11", kv_gib=1, max_model_len=2048))
    assert q.fits and [r.node for r in q.ranks] == [0, 0]
    # auto takes one logical CPU per physical core (the highest sibling on x86): 14 cores, 1 reserved
    a = make_plan(tiny, topo, PlanConfig(tp=1, kv_gib=1, max_model_len=2048))
    assert len(a.ranks[0].cpus) == 13


def test_fixture_eight_small_nodes():
    topo = _fixture("16amd64-8n2c")
    p = make_plan(model_from_config(TINY), topo, PlanConfig(tp=2, kv_gib=1, max_model_len=2048))
    assert p.fits and [r.cpus for r in p.ranks] == [(0,), (2,)]
    q = make_plan(model_from_config(TINY), topo, PlanConfig(tp=2, kv_gib=8, max_model_len=2048))
    assert q.verdict == "error"  # 8 GiB KV on a node of 8 GiB


# --------------------------------------------------------------------------------------------
# solver and engine configs
# --------------------------------------------------------------------------------------------


def test_solver_ranks_fitting_configs_first(seed, box):
    cands = solve(seed, box, limit=50)
    assert cands and cands[0].plan.fits
    fits = [c for c in cands if c.plan.fits]
    assert {c.config.tp for c in fits} >= {4, 8}
    assert all(c.config.tp * c.config.pp >= 4 for c in fits)
    scores = [c.score for c in cands]
    assert scores == sorted(scores, reverse=True)
    first_bad = next(i for i, c in enumerate(cands) if not c.plan.fits)
    assert all(not c.plan.fits for c in cands[first_bad:])
    assert all(c.why and "\n" not in c.why for c in cands)
    # whole-GiB KV candidates keep a margin under the max
    for c in fits:
        if c.config.kv_gib is not None:
            assert float(c.config.kv_gib).is_integer()
            assert all(r.kv_bytes <= r.max_kv_bytes for r in c.plan.ranks)


def test_solver_prefers_one_socket_at_equal_cores(seed, box):
    cands = solve(seed, box, base=PlanConfig(kv_gib=10, max_model_len=16384), limit=100)
    tp4 = [c for c in cands if c.config.tp == 4 and c.config.pp == 1 and c.plan.fits]
    assert tp4 and tp4[0].plan.cross_socket_groups == 0
    crossing = [c for c in tp4 if c.plan.cross_socket_groups]
    assert all(c.score < tp4[0].score for c in crossing)
    tp8 = next(c for c in cands if c.config.tp == 8 and c.plan.fits)
    assert tp8.plan.cross_socket_groups == 1


def test_config_from_engine_and_back():
    cfg = EngineConfig(
        model="/m",
        tensor_parallel_size=2,
        kv_cache_gib=4.0,
        omp_threads_bind="0-13|15-28",
        reserved_cpus=2,
        max_model_len=4096,
        gpu_memory_utilization=0.8,
        argv=("vllm", "serve", "/m", "--max-num-batched-tokens", "1024"),
        vllm_version="0.32.0+cpu",
    )
    pc = config_from_engine(cfg)
    assert (pc.tp, pc.pp, pc.bind, pc.kv_gib, pc.reserved_cpus) == (2, 1, "0-13|15-28", 4.0, 2)
    assert pc.max_num_batched_tokens == 1024 and pc.modern
    assert pc.env() == {
        "VLLM_CPU_OMP_THREADS_BIND": "0-13|15-28",
        "VLLM_CPU_KVCACHE_SPACE": "4",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "2",
    }
    assert pc.args() == [
        "--tensor-parallel-size",
        "2",
        "--max-model-len",
        "4096",
        "--max-num-batched-tokens",
        "1024",
        "--gpu-memory-utilization",
        "0.8",
    ]
    assert "\n" not in pc.summary() and "TP=2" in pc.summary()
    assert config_from_engine(EngineConfig()).bind == "auto"


def test_plan_json_has_exactly_the_issue_keys(seed, box):
    out = plan(seed, box, tp=16).to_json()
    assert set(out) == {"ranks", "verdict", "findings"}
    assert out["findings"][0].startswith("error: ValueError: Total number of attention heads")
    out = plan(seed, box, tp=4).to_json()
    assert set(out["ranks"][0]) == {
        "rank",
        "node",
        "cpus",
        "weights_bytes",
        "kv_bytes",
        "overhead_bytes",
        "node_budget_bytes",
        "verdict",
    }
    assert out["ranks"][0]["cpus"] == "0-13"


def test_running_engine_memory_counts_back_into_its_node(seed, box):
    """Planning a live engine: its workers' resident bytes would be freed by a relaunch."""
    from numatop_llm.probes.models import Engine, Process, Role

    p0 = plan(seed, box, tp=4)
    workers = tuple(Process(pid=100 + i, role=Role.WORKER, rank=i, node_bytes={i: 20 * GIB}) for i in range(4))
    eng = Engine(root_pid=1, processes=workers)
    # the same machine with 20 GiB used on each node by the engine itself
    used = [k + 20 * 2**20 if i < 4 else k for i, k in enumerate(NODE_BASE_USED_KIB)]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        busy = read_topology(write_seed_sysfs(Path(d), used_kib=used))
    assert make_plan(seed, busy, PlanConfig(tp=4)).verdict == "error"
    p1 = make_plan(seed, busy, PlanConfig(tp=4), engine=eng)
    assert p1.fits
    assert abs(p1.ranks[0].node_budget_bytes - p0.ranks[0].node_budget_bytes) < 64 * 2**20


def test_exporter_bridge_uses_the_planner(seed, box, tmp_path):
    """The exporter turns the monitor's plan verdict into per-rank headroom."""
    from numatop_llm.exporter import headroom_from_plan
    from numatop_llm.monitor.planbridge import EnginePlanner
    from numatop_llm.probes.models import Engine, Process, Role

    model_dir = tmp_path / "DeepSeek-R1-Distill-Qwen-32B"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(
        (REPO / "app" / "data" / "models" / "DeepSeek-R1-Distill-Qwen-32B" / "config.json").read_text()
    )
    eng = Engine(
        root_pid=1,
        processes=tuple(Process(pid=10 + i, role=Role.WORKER, rank=i) for i in range(2)),
        config=EngineConfig(model=str(model_dir), tensor_parallel_size=2, omp_threads_bind="auto"),
    )
    verdict = EnginePlanner().verdict(eng, box)
    out = headroom_from_plan(verdict.plan, eng)
    assert verdict.problem is None and out is not None
    assert {r.node for r in out.values()} == {0, 1}
    assert all(r.will_oom and r.headroom_bytes < 0 and r.source == "planner" for r in out.values())


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", "plan", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_cli_seed_story_exit_codes():
    r = cli("--demo", "--tp", "2")
    assert r.returncode == 1, r.stderr
    assert "oom" in r.stdout and "Worker_TP1 binds memory to node 1" in r.stdout
    r = cli("--demo", "--tp", "4", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "fits" and [x["verdict"] for x in out["ranks"]] == ["fits"] * 4
    r = cli("--demo", "--tp", "16", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["verdict"] == "error"


def test_cli_solve_json():
    r = cli("--demo", "--solve", "--json", "--limit", "5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"ranks", "verdict", "findings", "candidates"}
    assert len(out["candidates"]) == 5 and out["candidates"][0]["verdict"] == "fits"
    assert out["verdict"] == "oom"  # TP=1: the given configuration itself does not fit


@pytest.mark.parametrize(
    "args, message",
    [
        (("--model", "/nonexistent/model"), "no such model directory"),
        (("--demo", "--bind", "0-x|3"), "bad --bind"),
        (("--demo", "--tp", "0"), "--tp must be ≥ 1"),
        (("--demo", "--kv-gib", "-1"), "--kv-gib must be ≥ 0"),
        (("--demo", "--topology", "/nonexistent"), "not a sysfs fixture"),
        (("--tp", "2"), "needs --model DIR, --demo, or --pid N"),
        (("--pid", "999999999"), "no such process"),
        (("--demo", "--tp", "two"), "invalid int value"),
    ],
    ids=["bad-dir", "bad-bind", "bad-tp", "bad-kv", "bad-topology", "no-model", "bad-pid", "bad-flag"],
)
def test_cli_bad_input_exits_2_with_one_line(args, message):
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_model_dir_and_fixture_topology(tmp_path):
    require_fixtures()
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY))
    fixture = next(p for p in fixture_dirs() if p.name == "16amd64-8n2c")
    r = cli("--model", str(d), "--topology", str(fixture), "--tp", "2", "--kv-gib", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["node"] for x in out["ranks"]] == [0, 1]


def test_cgroup_memory_limit_clamps_the_ranks_together(seed, box):
    """vLLM 0.32 clamps node figures by a cgroup limit; all ranks share the engine's cgroup."""
    p = make_plan(seed, box, PlanConfig(tp=4), memory_limit_bytes=64 * GIB, memory_usage_bytes=GIB)
    assert p.verdict == "oom" and all(r.verdict == "oom" for r in p.ranks)
    assert any("cgroup memory limit (64.0 GiB) leaves 63.0 GiB" in f for f in p.findings)
    q = make_plan(seed, box, PlanConfig(tp=4, kv_gib=2, max_model_len=8192), memory_limit_bytes=128 * GIB)
    assert q.fits
    # a limit below a node's total becomes that node's total for vLLM's sizing
    r = make_plan(seed, box, PlanConfig(tp=8, kv_gib=1, max_model_len=8192), memory_limit_bytes=20 * GIB)
    assert r.ranks[0].node_total_bytes == 20 * GIB


def test_observed_bind_overrides_the_rule_for_the_engines_own_layout(box):
    """Two TP ranks that numa_maps shows both bound to node 0: the budget counts both there."""
    from numatop_llm.probes.models import Engine, Policy, Process, Role

    tiny = model_from_config(TINY)
    bound0 = Policy(mode="bind", nodes=(0,), text="bind:0")
    eng = Engine(
        root_pid=1,
        processes=tuple(Process(pid=10 + i, role=Role.WORKER, rank=i, policy=bound0) for i in range(2)),
        config=EngineConfig(model="/m", tensor_parallel_size=2, omp_threads_bind="auto"),
    )
    cfg = PlanConfig(tp=2, kv_gib=14, max_model_len=2048)
    assert [r.node for r in make_plan(tiny, box, cfg).ranks] == [0, 1]
    p = make_plan(tiny, box, cfg, engine=eng)
    assert [r.node for r in p.ranks] == [0, 0] and p.ranks[1].shares_node_with == (0,)
    assert any("Worker_TP1: numa_maps shows bind:0 where vLLM's rule gives node 1" in f for f in p.findings)
    # a different what-if is planned by the rule
    assert [r.node for r in make_plan(tiny, box, cfg.model_copy(update={"tp": 4}), engine=eng).ranks] == [0, 1, 2, 3]
