"""Odd and broken trees: the readers degrade with a reason, never raise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from numatop_llm.probes.engine import EngineReader
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader
from numatop_llm.probes.topology import read_topology


def _copy_seed(seed_roots: SysRoots, tmp_path: Path) -> SysRoots:
    shutil.copytree(seed_roots.sys, tmp_path / "sys")
    shutil.copytree(seed_roots.proc, tmp_path / "proc")
    return SysRoots(proc=tmp_path / "proc", sys=tmp_path / "sys")


def test_truncated_and_garbled_node_files(seed_roots, tmp_path):
    roots = _copy_seed(seed_roots, tmp_path)
    node = roots.sys / "devices/system/node"
    (node / "node2" / "meminfo").write_text("Node 2 MemTot")
    (node / "node3" / "distance").write_text("10 12 zz")
    (node / "node4" / "cpulist").write_text("60-7x")
    topo = read_topology(roots)
    assert len(topo.nodes) == 8
    assert topo.node(2).memory is None
    assert topo.node(3).distances == {}
    assert any("node2/meminfo" in d for d in topo.degraded)
    assert any("node3/distance" in d for d in topo.degraded)
    assert any("node4/cpulist" in d for d in topo.degraded)
    assert topo.node(5).total_bytes > 0


# Drop to ``nobody`` inside the interpreter (the interpreter itself may live under /root, which
# nobody cannot enter): everything the command needs is imported first.
AS_NOBODY = """
import os, sys, json, argparse, importlib, pwd
import numatop_llm.commands.cli, numatop_llm.report, numatop_llm.probes.engine, numatop_llm.probes.snapshot
if os.geteuid() == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
sys.exit(numatop_llm.commands.cli.main(["snapshot", "--json", "--pid", "1"]))
"""


def test_non_root_user_gets_permission_notes_not_a_traceback():
    """A non-root user attached to a root process (PID 1) sees what it cannot read."""
    out = subprocess.run(
        [sys.executable, "-c", AS_NOBODY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert any(d.startswith("1: permission denied") and "numa_maps" in d for d in data["degraded"])
    assert data["processes"][0]["pid"] == 1
    assert data["nodes"], "topology must still be shown"


def test_fake_proc_tree_with_truncated_files(seed_roots, tmp_path):
    roots = _copy_seed(seed_roots, tmp_path)
    pdir = roots.proc / "4242"
    (pdir / "task" / "4242").mkdir(parents=True)
    (pdir / "status").write_text("Name:\tpython3\nPPid:\t1\nUid:\t0 0 0 0\nVmRSS:\t  10")  # truncated
    (pdir / "cmdline").write_bytes(b"VLLM::Worker_TP1\x00")
    (pdir / "stat").write_text("4242 (VLLM::Worker_TP) S 1")  # truncated
    (pdir / "numa_maps").write_text("7f00 bind:1 anon=10 N1=10 kernelpagesize_kB=4\n7f01 bind:1 an")
    (pdir / "task" / "4242" / "stat").write_text("garbage")
    snap = SnapshotReader(roots, 4242).read()
    proc = snap.engine.processes[0]
    assert proc.label == "Worker_TP1" and proc.tp_rank == 1
    assert proc.node_bytes == {1: 40960}
    assert proc.policy.text == "bind:1"
    assert any("garbled" in d for d in proc.degraded)


def test_no_numa_kernel_shows_one_node(tmp_path):
    cpu = tmp_path / "sys/devices/system/cpu"
    for i in range(4):
        (cpu / f"cpu{i}" / "topology").mkdir(parents=True)
        (cpu / f"cpu{i}" / "topology" / "physical_package_id").write_text("0\n")
        (cpu / f"cpu{i}" / "topology" / "core_cpus_list").write_text(f"{i}\n")
    (cpu / "online").write_text("0-3\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 1024 kB\nMemFree: 512 kB\n")
    topo = read_topology(SysRoots(proc=tmp_path / "proc", sys=tmp_path / "sys"))
    assert topo.node_ids == (0,)
    assert topo.nodes[0].cpus == (0, 1, 2, 3)
    assert topo.nodes[0].total_bytes == 1024 * 1024
    assert any("no NUMA nodes" in d for d in topo.degraded)


def test_engine_reader_on_pid_without_permission_to_environ(tmp_path, seed_roots):
    roots = _copy_seed(seed_roots, tmp_path)
    pdir = roots.proc / "77"
    (pdir / "task").mkdir(parents=True)
    (pdir / "status").write_text("Name:\tvllm\nPPid:\t1\nUid:\t1000 1000 1000 1000\nVmRSS:\t 2048 kB\n")
    (pdir / "cmdline").write_bytes(b"/venv/bin/python3\x00/venv/bin/vllm\x00serve\x00/models/m\x00-tp\x002\x00")
    engine = EngineReader(roots, 77).read({})
    assert engine.is_vllm
    assert engine.config.model == "/models/m" and engine.config.tensor_parallel_size == 2
    assert engine.processes[0].rss_bytes == 2048 * 1024
