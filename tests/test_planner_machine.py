"""Machine what-ifs on the seed box (issue #17): SNC off, BIOS interleave, numactl and
CPU_VISIBLE_MEMORY_NODES as vLLM 0.32 applies them, and the remote-traffic cost, with the arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from numatop_llm.demo.seedbox import NODE_BASE_USED_KIB, NODE_TOTAL_KIB, write_seed_sysfs
from numatop_llm.planner import PlanConfig, make_plan, seed_model
from numatop_llm.planner.machine import MachineError, derive
from numatop_llm.planner.machineplan import build, plan, solve_ranked
from numatop_llm.planner.placement import DISTANCE_PENALTY, REMOTE_PENALTY, interleave_pages, parse_launch, traffic
from numatop_llm.probes.topology import read_topology

GIB = 2**30
KIB = 1024
REPO = Path(__file__).resolve().parent.parent
#: the story's context length: KV 4 GiB per rank must hold one sequence (vLLM's start-up check)
STORY = {"max_model_len": 8192}


@pytest.fixture(scope="module")
def seed():
    return seed_model()


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return read_topology(write_seed_sysfs(tmp_path_factory.mktemp("seedbox")))


def test_one_node_per_socket_is_the_sum_of_each_sockets_four_nodes(box):
    m = derive(box, nodes_per_socket=1)
    assert [n.id for n in m.topology.nodes] == [0, 1]
    assert m.nodes_per_socket == {0: 1, 1: 1}
    assert m.derived_from == {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}
    n0, n1 = m.topology.nodes
    # MemTotal of node 0' = 32,716,800 + 3 × 32,979,968 KiB = 131,656,704 KiB ≈ 125.6 GiB (a "128 GB" node)
    assert n0.memory.total_bytes == sum(NODE_TOTAL_KIB[:4]) * KIB == 131_656_704 * KIB
    assert n1.memory.total_bytes == sum(NODE_TOTAL_KIB[4:]) * KIB
    assert n0.cpus == tuple(range(60)) and n1.cpus == tuple(range(60, 120))
    # distances as the kernel would report them: 10 inside, 21 to the other socket
    assert n0.distances == {0: 10, 1: 21} and n1.distances == {0: 21, 1: 10}
    assert {c.node for c in m.topology.cpus if c.id < 60} == {0}
    assert m.changes and "sub-NUMA clustering off" in m.changes[0]


def test_snc2_keeps_the_sub_numa_distance_between_a_sockets_halves(box):
    m = derive(box, nodes_per_socket=2)
    assert [len(n.cpus) for n in m.topology.nodes] == [30, 30, 30, 30]
    assert [m.topology.nodes[0].distances[i] for i in range(4)] == [10, 12, 21, 21]


def test_what_cannot_be_derived_is_said(box):
    with pytest.raises(MachineError, match="15 cores: they cannot be split into 2"):
        derive(box, nodes_per_socket=8)
    with pytest.raises(MachineError, match="cannot be merged into 3"):
        derive(box, nodes_per_socket=3)
    # a split of a one-node socket is possible, with an assumed distance between the halves
    snc_off = derive(box, nodes_per_socket=1).topology
    back = derive(snc_off, nodes_per_socket=2)
    assert [len(n.cpus) for n in back.topology.nodes] == [30, 30, 30, 30]
    assert back.topology.nodes[0].distances[1] == 12
    assert any("assumed" in n for n in back.notes)


def test_snc_off_tp2_fits_with_kv_4_gib_each_rank_on_a_128_gb_node(seed, box):
    assert make_plan(seed, box, PlanConfig(tp=2, kv_gib=4, **STORY)).verdict == "oom"  # the story, as it is
    what = build(box, nodes_per_socket=1)
    p, cost = plan(seed, what, PlanConfig(tp=2, kv_gib=4, **STORY))
    assert p.verdict == "fits", (p.errors, p.findings)
    for r in p.ranks:
        assert r.node == r.rank  # auto bind: rank i on node i of the 2-node machine
        # node budget = MemFree + file LRU + SReclaimable of its four old nodes:
        # 125.6 GiB − (used 1.5+0.5+0.47+0.44 GiB on socket 0) + file LRU back ≈ 123.6 GiB
        used = sum(NODE_BASE_USED_KIB[4 * r.rank : 4 * r.rank + 4]) * KIB
        assert r.node_budget_bytes >= r.node_total_bytes - used
        # need = 30.5 GiB weights + 4 GiB KV + ~1.3 GiB runtime ≈ 35.8 GiB, far below ~123.6 GiB
        assert r.kv_bytes == 4 * GIB
        assert 35 * GIB < r.need_bytes < 37 * GIB < 120 * GIB < r.node_budget_bytes
    # what is given up: each rank's pages are spread over its socket's four former nodes by the memory
    # controller; its 59 threads run 15/15/15/14 on them: local = Σ threads(d) × pages(d) ≈ 1/4
    assert cost.mean_remote_share == pytest.approx(0.75, abs=0.01)
    # average distance ≈ 1/4 × 10 + 3/4 × 12 = 11.5
    assert cost.mean_distance == pytest.approx(11.5, abs=0.02)


def test_bios_interleave_of_a_sockets_four_nodes_makes_tp2_traffic_75_percent_remote(seed, box):
    what = build(box, interleave="0-3|4-7")
    p, cost = plan(seed, what, PlanConfig(tp=2, kv_gib=4, **STORY))
    assert p.verdict == "fits"
    r0 = cost.ranks[0]
    # threads: CPUs 0-58 (59, one reserved) → 15/59 on each of nodes 0-2, 14/59 on node 3
    assert r0.threads == pytest.approx({0: 15 / 59, 1: 15 / 59, 2: 15 / 59, 3: 14 / 59})
    # pages: by memory, 32,716,800 : 32,979,968 × 3 → ≈ 1/4 each
    totals = NODE_TOTAL_KIB[:4]
    assert r0.pages == pytest.approx({d: totals[d] / sum(totals) for d in range(4)})
    local = sum(r0.threads[d] * r0.pages[d] for d in range(4))
    assert r0.remote_share == pytest.approx(1 - local) == pytest.approx(0.75, abs=0.005)
    assert "75% of memory traffic remote" in cost.headline()
    # only one socket interleaved: rank 1 lands on an old 32 GB node and is OOM-killed
    one = build(box, interleave="0-3")
    p1, c1 = plan(seed, one, PlanConfig(tp=2, kv_gib=4, **STORY))
    assert [r.verdict for r in p1.ranks] == ["fits", "oom"]
    assert c1.ranks[0].remote_share == pytest.approx(0.75, abs=0.005) and c1.ranks[1].remote_share == 0


def test_vllm_032_overrides_a_launchers_numactl_interleave(seed, box):
    what = build(box, numactl="--interleave=0-3")
    p, cost = plan(seed, what, PlanConfig(tp=2, kv_gib=4, **STORY))
    # every worker re-binds strictly to its own node: the OOM stays, nothing is interleaved
    assert p.verdict == "oom"
    assert [r.policy for r in cost.ranks] == ["bind:0", "bind:1"]
    assert all(r.overridden for r in cost.ranks) and cost.mean_remote_share == 0
    assert any("overrides numactl interleave:0-3" in f and "init_cpu_memory_env" in f for f in cost.findings)


def test_old_vllm_with_nobind_keeps_the_launchers_interleave(seed, box):
    what = build(box, numactl="-i 0-3")
    _p, cost = plan(seed, what, PlanConfig(tp=2, kv_gib=4, bind="nobind", vllm_version="0.8.5", **STORY))
    assert [r.policy for r in cost.ranks] == ["interleave:0-3", "interleave:0-3"]
    assert not any(r.overridden for r in cost.ranks)
    # unpinned threads run on all 120 CPUs (1/8 per node), pages on 0-3 (1/4 each): local = 4 × 1/8 × 1/4
    assert cost.mean_remote_share == pytest.approx(1 - 4 * (1 / 8) * (1 / 4))
    # distance: threads on 0-3 see 10+12+12+12 = 46, on 4-7 see 4 × 21 = 84, each pair weighted 1/8 × 1/4
    assert cost.mean_distance == pytest.approx((4 * 46 + 4 * 84) / 32) == pytest.approx(16.25)
    assert any("sets no memory policy of its own" in f for f in cost.findings)


def test_a_kept_strict_membind_that_cannot_hold_the_ranks_is_an_oom(seed, box):
    # vLLM 0.8 with nobind keeps numactl --membind=0: both ranks' 35.8 GiB on node 0's 30.0 GiB
    p, cost = plan(
        seed,
        build(box, numactl="--membind=0"),
        PlanConfig(tp=2, kv_gib=4, bind="nobind", vllm_version="0.8.5", **STORY),
    )
    assert p.verdict == "oom" and cost.verdict == "oom"
    assert any("node 0 would hold 71.5 GiB" in f and "OOM-kills" in f for f in cost.findings)
    # interleave is not strict: a finding, no OOM
    p, cost = plan(
        seed,
        build(box, numactl="--interleave=0,1"),
        PlanConfig(tp=2, kv_gib=4, bind="nobind", vllm_version="0.8.5", **STORY),
    )
    assert cost.verdict is None and any("falls back to the nearest" in f for f in cost.findings)


def test_cpu_visible_memory_nodes_moves_the_ranks(seed, box):
    what = build(box, visible_nodes="4,5")
    p, _ = plan(seed, what, PlanConfig(tp=4, **STORY))
    # vLLM asserts nodes ≥ local ranks over the visible nodes only
    assert p.verdict == "error" and any("Not enough allowed NUMA nodes" in e for e in p.errors)
    p2, _ = plan(seed, build(box, visible_nodes="4,5,6,7"), PlanConfig(tp=4, **STORY))
    assert [r.node for r in p2.ranks] == [4, 5, 6, 7] and p2.fits
    assert p2.ranks[0].cpus[0] == 60


def test_numactl_cpunodebind_narrows_what_auto_bind_can_use(seed, box):
    p, _ = plan(seed, build(box, numactl="--cpunodebind=1"), PlanConfig(tp=1, **STORY))
    # auto gives rank 0 node 0 (Mems_allowed is unchanged), whose CPUs it may not use
    assert p.verdict == "error" and any("no usable CPU" in e for e in p.errors)
    with pytest.raises(ValueError, match="not modelled"):
        parse_launch("--huge", box)
    with pytest.raises(ValueError, match="no node 9"):
        parse_launch("--membind=9", box)


def test_interleave_pages_round_robin_by_page_offset():
    # 10 pages from interleave index 6 over nodes 0-3: indices 6..15 → nodes 2,3,0,1,2,3,0,1,2,3
    assert interleave_pages(10, [3, 1, 0, 2], first_index=6) == {0: 2, 1: 2, 2: 3, 3: 3}
    assert interleave_pages(65536, [0, 1, 2, 3], first_index=12345) == {n: 16384 for n in range(4)}


def test_traffic_arithmetic():
    dist = {0: {0: 10, 1: 21}, 1: {0: 21, 1: 10}}
    remote, avg = traffic({0: 1.0}, {0: 0.5, 1: 0.5}, dist)
    assert remote == 0.5 and avg == pytest.approx(15.5)


def test_solve_ranks_by_remote_share(seed, box):
    what = build(box)
    ranked = solve_ranked(seed, what, PlanConfig(**STORY), limit=30)
    fits = [(c, pl) for c, pl in ranked if c.plan.fits]
    assert fits and fits[0][1].mean_remote_share == 0
    for c, pl in ranked:
        if pl.mean_remote_share > 0.5:
            assert f"{pl.mean_remote_share:.0%} of traffic remote" in c.why
    scores = [c.score for c, _ in ranked]
    assert scores == sorted(scores, reverse=True)
    # on the SNC-off machine TP=1 nobind fits too, with twice the cores, but its threads run on both sockets
    # (88% remote, distance 16.2): ranked below the auto-bound plans of the same TP/PP (75%, 11.5)
    snc_off = solve_ranked(seed, build(box, nodes_per_socket=1), PlanConfig(**STORY), limit=40)
    order = [(c.config.bind, c.plan.fits, round(pl.mean_remote_share, 2)) for c, pl in snc_off]
    nobind = [i for i, (bind, fits, _) in enumerate(order) if bind == "nobind" and fits]
    auto = [i for i, (bind, fits, _) in enumerate(order) if bind == "auto" and fits]
    assert nobind and auto and order[0][0] == "auto", order
    for i in nobind:
        c = snc_off[i][0]
        same = [j for j in auto if snc_off[j][0].config.tp == c.config.tp and snc_off[j][0].config.pp == c.config.pp]
        assert same and max(same) < i, order
    assert all(order[i][2] >= 0.85 for i in nobind) and all(order[i][2] == 0.75 for i in auto)
    # the penalty: 20 points per unit of remote share + 40 per unit of distance above local (÷10)
    c, pl = snc_off[0]
    assert (REMOTE_PENALTY, DISTANCE_PENALTY) == (20, 40)
    assert pytest.approx(21) == 20 * 0.75 + 40 * 0.15 and pl.mean_distance == pytest.approx(11.5, abs=0.02)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", "plan", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_cli_plan_says_which_machine_it_planned():
    r = cli("--demo", "--tp", "2", "--kv-gib", "4", "--max-model-len", "8192", "--nodes-per-socket", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "fits"
    assert out["machine"]["label"].startswith("1 node(s) per socket") and out["machine"]["nodes"] == 2
    assert out["machine"]["node_list"][0]["from_nodes"] == [0, 1, 2, 3]
    assert out["placement"]["remote_share"] == pytest.approx(0.75, abs=0.01)
    r = cli("--demo", "--tp", "2", "--nodes-per-socket", "8")
    assert r.returncode == 2 and "cannot be split" in r.stderr and "Traceback" not in r.stderr
    r = cli("--demo", "--tp", "2", "--max-model-len", "8192", "--numactl=--interleave=0-3", "--json")
    assert r.returncode == 1
    assert any("overrides numactl" in f for f in json.loads(r.stdout)["findings"])
