"""The -9 post-mortem on real OOM kills of this kernel (cgroup limit) and on kernel report text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from numatop_llm.postmortem import explain_kill
from numatop_llm.probes.cgroup import memory_cgroup_dir
from numatop_llm.probes.kernel_log import parse_oom_reports, read_kernel_log
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.textio import Problems
from tests.conftest import IN_CI

MEMBIND_REPORT = """\
[   41.200001] python3 invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0
[   41.200100] Mem-Info:
[   41.200400] oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,mems_allowed=0-7,global_oom,task_memcg=/,task=python3,pid=4321,uid=0
[   41.200500] Out of memory: Killed process 4321 (python3) total-vm:1015808kB, anon-rss:498688kB, file-rss:4096kB, shmem-rss:0kB, UID:0 pgtables:1100kB oom_score_adj:0
"""


def test_membind_report_is_explained_with_the_engine_record():
    kills = parse_oom_reports(MEMBIND_REPORT)
    assert len(kills) == 1
    k = kills[0]
    assert (k.pid, k.constraint, k.nodemask) == (4321, "CONSTRAINT_MEMORY_POLICY", (1,))
    assert k.anon_rss_bytes == 498688 * 1024
    engine = {
        "config": {"tensor_parallel_size": 2, "pipeline_parallel_size": 1, "kv_cache_gib": 4},
        "processes": [{"pid": 4321, "label": "Worker_TP1", "rank": 1, "role": "worker", "policy_nodes": [1]}],
        "nodes": {"1": {"total_bytes": 32 * 2**30, "free_bytes": 0}},
    }
    text = explain_kill(k, engine).text
    assert text.startswith("Worker_TP1 (pid 4321) was killed by the kernel's OOM killer")
    assert "strictly bound (membind) to node 1" in text
    assert "node 1 holds 32.0 GiB" in text
    assert "rank 1 of TP=2" in text and "VLLM_CPU_KVCACHE_SPACE=4" in text


def test_kmsg_record_format():
    text = (
        "6,900,41200400,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        "oom_memcg=/box,task_memcg=/box,task=python3,pid=77,uid=1000\n"
        "3,901,41200500,-;Memory cgroup out of memory: Killed process 77 (python3) total-vm:10kB, anon-rss:8kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0\n"
    )
    (k,) = parse_oom_reports(text)
    assert (k.pid, k.constraint, k.oom_memcg, k.uid) == (77, "CONSTRAINT_MEMCG", "/box", 1000)
    assert k.uptime_seconds == pytest.approx(41.2005)


def _limited_cgroup(limit: int) -> Path:
    """A child of our own memory cgroup with a small limit (v2 memory.max or v1 limit_in_bytes)."""
    found = memory_cgroup_dir(SysRoots(), os.getpid(), Problems())
    if found is None:
        if IN_CI:
            pytest.fail("no memory cgroup to create a child in")
        pytest.skip("no memory cgroup")
    parent, _, version = found
    child = parent / f"numatop-test-{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
        (child / ("memory.max" if version == 2 else "memory.limit_in_bytes")).write_text(str(limit))
    except OSError as exc:
        if IN_CI:
            pytest.fail(f"cannot create a memory cgroup: {exc}")
        pytest.skip(f"cannot create a memory cgroup: {exc}")
    return child


def test_real_cgroup_oom_kill_is_found_and_explained():
    child = _limited_cgroup(64 * 2**20)
    try:
        code = (
            f"import os; open({str(child / 'cgroup.procs')!r}, 'w').write(str(os.getpid()))\n"
            "b = bytearray(256 * 2**20)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], timeout=60)
        assert proc.returncode == -9, "the kernel should have OOM-killed the child"
        pid = None
        for _ in range(20):  # the report reaches the log right after the kill
            text, problems = read_kernel_log()
            kills = [
                k
                for k in parse_oom_reports(text)
                if k.constraint == "CONSTRAINT_MEMCG" and child.name in (k.oom_memcg or "")
            ]
            if kills:
                pid = kills[-1].pid
                break
            time.sleep(0.1)
        if pid is None:
            if IN_CI:
                pytest.fail(f"OOM kill not found in the kernel log ({problems})")
            pytest.skip(f"kernel log not readable: {problems}")
        out = subprocess.run(
            [sys.executable, "-m", "numatop_llm", "explain", "--pid", str(pid), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        (e,) = json.loads(out.stdout)["explanations"]
        assert e["constraint"] == "CONSTRAINT_MEMCG"
        assert child.name in e["text"] and "hit its memory limit" in e["text"]
    finally:
        for _ in range(50):
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_explain_without_kills_says_so(tmp_path):
    log = tmp_path / "dmesg.txt"
    log.write_text("[    0.000000] Linux version 6.1\n")
    out = subprocess.run(
        [sys.executable, "-m", "numatop_llm", "explain", "--kernel-log", str(log), "--pid", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stdout.strip() == "no OOM kill found for pid 5 in the kernel log"
