"""Machine what-ifs against real kernels in QEMU guests (issue #17).

1. Interleave: a process started with ``numactl --interleave=0-3`` (socket 0's four nodes of the
   8-node guest) maps and touches 256 MiB; ``numatop_llm.planner.placement.interleave_pages`` predicts,
   from the mapping's address alone, how many pages each node holds (page k of the mapping goes to
   node ``(addr >> 12) + k mod 4`` of the mask). numa_maps must agree within 5% per node, and the
   remote share computed from what the kernel did (threads on node 0, pages on 0-3) is the 75%
   at distance 11.5 the planner predicts for such a rank.
2. SNC off: the what-if machine derived from the 8-node guest with one node per socket
   (``derive(..., nodes_per_socket=1)``) must be the machine a guest booted with that layout
   (``seed8-snc-off``) reports: same nodes, CPUs and distances, MemTotal within 3%, and the same
   plan (rank nodes, CPUs, node budgets) for TP=2 with auto bind.
"""

from __future__ import annotations

import json
import re

import pytest

from numatop_llm.planner import PlanConfig, make_plan, seed_model
from numatop_llm.planner.machine import compare, derive
from numatop_llm.planner.placement import interleave_pages, traffic
from numatop_llm.probes.models import Topology
from numatop_llm.probes.numa_maps import parse_numa_maps
from tests.vm.fixtures import numa_vm  # noqa: F401 - the session fixture
from tests.vm.harness import NumaVm
from tests.vm.layouts import MIB

pytestmark = pytest.mark.vm

TOUCH = 256 * MIB
READ_TOPOLOGY = (
    ".venv/bin/python -c 'from probes.roots import SysRoots; from probes.topology import read_topology; "
    "print(read_topology(SysRoots.at()).model_dump_json())'"
)


def test_interleave_places_pages_as_predicted(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run(
        "seed8",
        f"numactl --interleave=0-3 --cpunodebind=0 python3 -I tests/vm/interleave_probe.py --bytes {TOUCH}",
        timeout=300,
    ).check()
    out = json.loads(res.stdout.strip().splitlines()[-1])
    start, pages, page = out["start"], out["pages"], out["page_size"]
    assert pages * page == TOUCH
    lines = {int(ln.split()[0], 16): ln for ln in out["numa_maps"].splitlines() if ln.strip()}
    vma = max(a for a in lines if a <= start)
    line = lines[vma]
    assert "interleave:0-3" in line, line
    seen = {int(n): int(c) for n, c in re.findall(r"\bN(\d+)=(\d+)", line)}
    # our mapping is alone in its VMA (MADV_NOHUGEPAGE keeps it from merging), so the prediction is exact
    assert sum(seen.values()) == pages, line
    predicted = interleave_pages(pages, [0, 1, 2, 3], first_index=start // page)
    assert sum(predicted.values()) == pages
    for node in range(8):
        want, got = predicted.get(node, 0), seen.get(node, 0)
        assert abs(got - want) <= 0.05 * max(want, 1), (node, got, want, line)
    # each of the four nodes holds a quarter (65536 pages / 4 = 16384 each)
    assert predicted == {0: pages // 4, 1: pages // 4, 2: pages // 4, 3: pages // 4}
    # the whole process: its anonymous pages are interleaved too (our 256 MiB dominates)
    whole = parse_numa_maps(out["numa_maps"])
    anon = whole.anon_bytes
    total = sum(anon.values())
    for node in range(4):
        assert abs(anon.get(node, 0) - total / 4) <= 0.05 * total / 4, anon
    assert sum(anon.get(n, 0) for n in range(4, 8)) == 0, anon
    # the cost of it, from what the kernel did: the process runs on node 0 (--cpunodebind=0), its pages
    # are on 0-3 → 3/4 of its traffic is remote, at distance 12 (the guest's SNC4 table): 0.25×10 + 0.75×12
    assert set(out["cpus"]) == {0, 1}
    dist = {i: {j: 10 if i == j else (12 if i // 4 == j // 4 else 21) for j in range(8)} for i in range(8)}
    remote, avg = traffic({0: 1.0}, {n: float(c) for n, c in seen.items()}, dist)
    assert remote == pytest.approx(0.75, abs=0.01) and avg == pytest.approx(11.5, abs=0.02)


def test_merged_node_whatif_matches_a_guest_booted_merged(numa_vm: NumaVm) -> None:  # noqa: F811
    seed8 = Topology.model_validate_json(numa_vm.run("seed8", READ_TOPOLOGY, timeout=180).check().stdout)
    booted = Topology.model_validate_json(numa_vm.run("seed8-snc-off", READ_TOPOLOGY, timeout=180).check().stdout)
    assert len(seed8.nodes) == 8 and len(booted.nodes) == 2
    what = derive(seed8, nodes_per_socket=1)
    assert compare(what.topology, booted) == []
    assert what.derived_from == {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}
    # the same plan on both: rank i on node i, the same CPU lists, budgets within 3%
    cfg = PlanConfig(tp=2, kv_gib=1, max_model_len=1024)
    model = seed_model()
    a, b = make_plan(model, what.topology, cfg), make_plan(model, booted, cfg)
    assert (
        [(r.node, r.cpus) for r in a.ranks]
        == [(r.node, r.cpus) for r in b.ranks]
        == [
            (0, tuple(range(0, 7))),
            (1, tuple(range(8, 15))),
        ]
    )
    for ra, rb in zip(a.ranks, b.ranks, strict=True):
        assert abs(ra.node_total_bytes - rb.node_total_bytes) <= 0.03 * rb.node_total_bytes
    # the operator's check after the reboot: `plan --check-machine FILE` in the guest booted merged
    from numatop_llm.planner.machineplan import build, plan, save

    w = build(seed8, nodes_per_socket=1)
    p, cost = plan(model, w, cfg)
    share = numa_vm.guest("seed8-snc-off").share
    save(share / "expected.json", w, cfg, p, cost)
    res = numa_vm.run(
        "seed8-snc-off",
        ".venv/bin/python -m numatop_llm plan --demo --topology live --check-machine /vmshare/expected.json --json",
        timeout=180,
    )
    assert res.returncode == 1, res.stderr  # the machine matches; the 61 GiB model does not fit 2 GiB nodes
    check = json.loads(res.stdout)["machine_check"]
    assert check == {"expected": "1 node(s) per socket (SNC off / NPS1)", "matches": True, "differences": []}
    # and the 8-node guest is not that machine
    (numa_vm.guest("seed8").share / "expected.json").write_text((share / "expected.json").read_text())
    res = numa_vm.run(
        "seed8",
        ".venv/bin/python -m numatop_llm plan --demo --topology live --check-machine /vmshare/expected.json --json",
        timeout=180,
    )
    assert json.loads(res.stdout)["machine_check"]["differences"] == ["expected 2 nodes, the kernel reports 8"]
