"""Every gathered real machine in shared/fixtures/sysfs read back as its EXPECTED.json says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from numatop_llm.probes.topology import read_topology
from tests.conftest import expected, fixture_dirs, fixture_roots

FIXTURES = fixture_dirs()


def test_fixture_trees_are_present():
    # Guards against a checkout without tests/fixtures: the parametrized tests would vanish.
    assert len(FIXTURES) >= 10, f"expected the 10 gathered machines, found {len(FIXTURES)}"


@pytest.mark.parametrize("tree", FIXTURES, ids=lambda p: p.name)
def test_topology_matches_expected(tree):
    exp = expected(tree)
    topo = read_topology(fixture_roots(tree))
    nodes = [
        {
            "id": n.id,
            "cpus": list(n.cpus),
            "total_bytes": n.total_bytes,
            "free_bytes": n.free_bytes,
            "distances": {str(k): v for k, v in n.distances.items()},
        }
        for n in topo.nodes
    ]
    assert nodes == exp["nodes"]
    assert list(topo.cpus_online) == exp["cpus_online"]
    assert list(topo.cpus_offline) == exp["cpus_offline"]
    assert [{"id": p.id, "cpus": list(p.cpus)} for p in topo.packages] == exp["packages"]
    assert topo.num_cores == exp["num_cores"]
    assert [n.id for n in topo.nodes] == exp["node_ids"]
    cpuless = [n.id for n in topo.nodes if not n.cpulist_all]
    assert cpuless == exp["cpuless_nodes"]


@pytest.mark.parametrize("tree", FIXTURES, ids=lambda p: p.name)
def test_snapshot_command_json_contract(tree):
    """`numatop-llm snapshot --json --sys --proc` prints the documented shape for every tree."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "numatop_llm",
            "snapshot",
            "--json",
            "--sys",
            str(tree / "sys"),
            "--proc",
            str(tree / "proc"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    exp = expected(tree)
    for key in ("nodes", "cpus_online", "cpus_offline"):
        got = data[key]
        if key == "nodes":
            got = [{k: n[k] for k in ("id", "cpus", "total_bytes", "free_bytes", "distances")} for n in got]
        assert got == exp[key]
    assert [{"id": p["id"], "cpus": p["cpus"]} for p in data["packages"]] == exp["packages"]


def test_sparse_node_ids_keep_their_numbers():
    tree = next(p for p in FIXTURES if p.name == "48amd64-4pa2n6c-sparse")
    topo = read_topology(fixture_roots(tree))
    assert topo.node_ids == (0, 1, 2, 33, 34, 45, 72, 73)
    assert topo.cpu_to_node()[18] == 33
    assert topo.node(72).distances[73] == 16


def test_offline_cpus_and_mismatched_distance_row_degrade_not_fail():
    tree = next(p for p in FIXTURES if p.name == "offline-cpu0-node0")
    topo = read_topology(fixture_roots(tree))
    assert topo.node(1).distances == {}
    assert any("distance row" in d for d in topo.degraded)
    # socket 0's online CPUs belong to no node: they must still be listed, without a node
    assert {c.id for c in topo.cpus if c.online and c.node is None} == {4, 6, 8, 10, 12, 14, 16, 18, 20}


def test_memory_only_and_generic_initiator_nodes():
    tree = next(p for p in FIXTURES if p.name.startswith("fakememinitiators"))
    topo = read_topology(fixture_roots(tree))
    memonly = [n.id for n in topo.nodes if not n.cpus and (n.total_bytes or 0) > 0]
    assert memonly == [5, 6, 7, 8, 9, 10]
    assert topo.node(4).cpus == () and topo.node(4).total_bytes == 0
    # every package's CPUs share one core_id: cores come from core_cpus
    assert topo.num_cores == 8


def test_hugepage_pools_are_counted():
    tree = next(p for p in FIXTURES if p.name.startswith("20em64t-hybrid"))
    mem = read_topology(fixture_roots(tree)).nodes[0].memory
    assert mem is not None
    sys_dir = tree / "sys/devices/system/node/node0/hugepages"
    expected_total = sum(
        int((d / "nr_hugepages").read_text()) * int(d.name.split("-")[1].removesuffix("kB")) * 1024
        for d in sys_dir.iterdir()
    )
    assert mem.hugepages_total_bytes == expected_total
