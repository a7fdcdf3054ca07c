"""Probes on this machine's real kernel: own process, a child bound with numactl, vanished PIDs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from numatop_llm.probes.engine import EngineReader, NoSuchProcess
from numatop_llm.probes.models import Role
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader
from numatop_llm.probes.topology import read_topology
from tests.conftest import IN_CI

LIVE = SysRoots()
TOUCH_MIB = 64
TOUCHER = (
    "import sys, time\n"
    f"b = bytearray({TOUCH_MIB} * 2**20)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_this_host_topology_is_consistent():
    topo = read_topology(LIVE)
    assert topo.cpus_online, "no online CPUs read"
    assert set(topo.cpus_online) <= {c.id for c in topo.cpus}
    assert sorted(c for n in topo.nodes for c in n.cpus) == sorted(
        c for c in topo.cpus_online if c in topo.cpu_to_node()
    )
    assert len(topo.cpus_online) == os.cpu_count()
    for n in topo.nodes:
        assert n.memory is not None and n.memory.total_bytes > 0


def test_snapshot_of_own_process_counts_threads_and_memory():
    reader = SnapshotReader(LIVE, os.getpid())
    snap = reader.read()
    me = next(p for p in snap.engine.processes if p.pid == os.getpid())
    assert me.role == Role.OTHER
    assert len(me.threads) == len(os.listdir(f"/proc/{os.getpid()}/task"))
    assert sum(me.node_bytes.values()) > 0
    assert set(me.threads[0].allowed_cpus) == os.sched_getaffinity(0)


def _start_toucher(prefix: list[str]) -> subprocess.Popen:
    p = subprocess.Popen([*prefix, sys.executable, "-c", TOUCHER], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def numactl() -> str:
    path = shutil.which("numactl")
    if path is None:
        if IN_CI:
            pytest.fail("numactl is not installed (.ci/run installs it)")
        pytest.skip("numactl not installed: apt-get install numactl")
    return path


def test_child_bound_with_numactl_reads_back_as_bind0(numactl):
    p = _start_toucher([numactl, "--membind=0", "--cpunodebind=0"])
    try:
        snap = SnapshotReader(LIVE, p.pid).read()
        proc = next(x for x in snap.engine.processes if x.pid == p.pid)
        assert proc.policy.text == "bind:0"
        assert proc.policy.strict
        assert proc.node_bytes.get(0, 0) >= TOUCH_MIB * 2**20
        node0 = set(snap.topology.node(0).cpus)
        assert all(set(t.allowed_cpus) <= node0 for t in proc.threads)
        # resident bytes per node add up to RSS
        assert abs(sum(proc.node_bytes.values()) - proc.rss_bytes) <= 0.05 * proc.rss_bytes
    finally:
        p.kill()
        p.wait(timeout=10)


def test_vanished_pid_is_a_degraded_snapshot_not_an_error():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    reader = SnapshotReader(LIVE, p.pid)
    assert reader.read().engine is not None
    p.kill()
    p.wait(timeout=10)
    snap = reader.read()
    assert snap.engine is None
    assert f"process {p.pid} exited" in snap.degraded
    with pytest.raises(NoSuchProcess):
        EngineReader(LIVE, p.pid).read({})


def test_cpu_percent_of_a_busy_thread():
    p = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<20: pass"])
    try:
        reader = SnapshotReader(LIVE, p.pid)
        reader.read()
        time.sleep(1.0)
        snap = reader.read()
        t = snap.engine.processes[0].threads[0]
        assert t.cpu_percent is not None and t.cpu_percent > 40
        assert t.cpu in snap.topology.cpus_online
    finally:
        p.kill()
        p.wait(timeout=10)


def test_snapshot_cli_with_pid_lists_the_process():
    out = subprocess.run(
        [sys.executable, "-m", "numatop_llm", "snapshot", "--json", "--pid", str(os.getpid())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(out.stdout)
    procs = {p["pid"]: p for p in data["processes"]}
    me = procs[os.getpid()]
    assert me["role"] == "other" and me["rss_bytes"] > 0
    assert {"tid", "comm", "cpu", "node", "allowed_cpus"} <= set(me["threads"][0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["snapshot", "--pid", "999999999"], "no such process: 999999999"),
        (["snapshot", "--sys", "/nonexistent"], "is not a sysfs tree"),
        (["snapshot", "--jsno"], "unrecognized arguments: --jsno"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    out = subprocess.run([sys.executable, "-m", "numatop_llm", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


GROWER = (
    "import sys\n"
    "a = bytearray(32 * 2**20)\n"
    "for i in range(0, len(a), 4096): a[i] = 1\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "b = bytearray(96 * 2**20)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "print('grown', flush=True)\n"
    "sys.stdin.readline()\n"
)


def test_reused_numa_maps_are_reread_when_the_process_grows():
    """numa_maps reuse (the cheap path) must never show stale per-node bytes."""
    p = subprocess.Popen([sys.executable, "-c", GROWER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        reader = EngineReader(LIVE, p.pid)
        cpu_node = read_topology(LIVE).cpu_to_node()
        before = sum(reader.read(cpu_node, numa_maps_max_age=3600).processes[0].node_bytes.values())
        again = sum(reader.read(cpu_node, numa_maps_max_age=3600).processes[0].node_bytes.values())
        assert reader.numa_maps_reused >= 1 and again == before
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "grown"
        after = sum(reader.read(cpu_node, numa_maps_max_age=3600).processes[0].node_bytes.values())
        assert after - before >= 90 * 2**20
    finally:
        p.kill()
        p.wait(timeout=10)
