"""A real ``numactl --membind=1 --cpunodebind=1`` process in the 8-node guest, seen by ``snapshot --pid``."""

from __future__ import annotations

import json

import pytest

from tests.vm.fixtures import numa_vm  # noqa: F401 - the session fixture
from tests.vm.harness import NumaVm
from tests.vm.layouts import LAYOUTS, MIB

pytestmark = pytest.mark.vm

TOUCH_MIB = 200
THREADS = 3
# The hog holds 200 MiB touched under membind=1 and runs 3 idle threads besides its main one;
# the snapshot is taken while it holds them, then numa_maps is read once more by the shell.
SCRIPT = f"""
numactl --membind=1 --cpunodebind=1 python3 -I tests/vm/hog.py --bytes {TOUCH_MIB * MIB} --threads {THREADS} \\
    --ready /tmp/hog.ready --hold 300 &
pid=$!
i=0
while [ ! -f /tmp/hog.ready ]; do
    kill -0 $pid 2>/dev/null || {{ echo "hog died" >&2; exit 3; }}
    i=$((i + 1)); [ $i -gt 1200 ] && {{ echo "hog not ready" >&2; exit 4; }}
    sleep 0.1
done
echo "pid $pid"
.venv/bin/python -m numatop_llm snapshot --pid $pid --json || exit 5
echo '=====8<====='
cat /proc/$pid/numa_maps
kill $pid; wait $pid
"""


def test_membind_process_seen_on_its_node(numa_vm: NumaVm) -> None:  # noqa: F811
    res = numa_vm.run("seed8", SCRIPT, timeout=300).check()
    head, _, numa_maps = res.stdout.partition("=====8<=====")
    first, _, body = head.partition("\n")
    pid = int(first.split()[1])
    snap = json.loads(body)
    (proc,) = [p for p in snap["processes"] if p["pid"] == pid]

    # memory: the 200 MiB it touched are on node 1, and (almost) nothing else is anywhere else
    per_node = {int(k): v for k, v in proc["node_bytes"].items()}
    assert TOUCH_MIB * MIB <= per_node[1] <= (TOUCH_MIB + 24) * MIB, per_node
    # shared file pages (the interpreter, libc) were read into the page cache by other processes
    assert sum(v for n, v in per_node.items() if n != 1) <= 16 * MIB, per_node
    assert proc["policy"] == "bind:1"
    assert "bind:1" in numa_maps
    assert proc["rss_bytes"] >= TOUCH_MIB * MIB

    # threads: main + 3, all allowed only node 1's CPUs, running there
    node1_cpus = list(LAYOUTS["seed8"].nodes[1].cpus)
    assert len(proc["threads"]) == THREADS + 1
    for t in proc["threads"]:
        assert t["allowed_cpus"] == node1_cpus
        assert t["cpu"] in node1_cpus
        assert t["node"] == 1
    assert proc["cpus_allowed"] == node1_cpus
    assert proc["degraded"] == []
