"""The generated seed box (DESIGN.md §1) reads back as the story's machine."""

from __future__ import annotations

from numatop_llm.probes.topology import read_topology

GIB = 2**30


def test_seed_box_shape(seed_roots):
    topo = read_topology(seed_roots)
    assert topo.node_ids == tuple(range(8))
    assert len(topo.cpus_online) == 120 and topo.num_cores == 120
    assert [p.nodes for p in topo.packages] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    for n in topo.nodes:
        assert len(n.cpus) == 15
        assert 31 * GIB < n.total_bytes < 32 * GIB
    d = topo.node(0).distances
    assert (d[0], d[3], d[4]) == (10, 12, 21)
    assert topo.degraded == ()
    assert 250 * GIB < sum(n.total_bytes for n in topo.nodes) < 256 * GIB
