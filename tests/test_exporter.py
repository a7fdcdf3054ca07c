"""The exporter's metrics from real processes: a numactl-bound child, a vLLM-shaped tree, a real memcg OOM kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from numatop_llm.exporter import WILL_OOM_MIN_BYTES, Exporter, parse_listen
from numatop_llm.probes.engine import discover_engines
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader
from tests.conftest import IN_CI
from tests.exporter_support import MemoryCgroup, VllmShapedTree, parse_metrics

LIVE = SysRoots()
MIB = 2**20


@pytest.fixture
def numactl() -> str:
    path = shutil.which("numactl")
    if path is None:
        if IN_CI:
            pytest.fail("numactl is not installed (tests/run.sh installs it)")
        pytest.skip("numactl not installed")
    return path


def scrape(ex: Exporter) -> dict:
    return parse_metrics(generate_latest(ex.registry).decode())


def value(metrics: dict, name: str, **labels: str) -> float:
    hits = [v for lab, v in metrics.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: {metrics.get(name)}"
    return hits[0]


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed worker stays a zombie until its parent reaps it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def make_exporter(**kw) -> Exporter:
    kw.setdefault("remember", False)
    kw.setdefault("log", lambda _msg: None)
    return Exporter(LIVE, **kw)


def test_node_and_process_memory_of_a_numactl_bound_child(numactl):
    code = "b = bytearray(96 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\n"
    code += "import time; time.sleep(60)"
    p = subprocess.Popen(
        [numactl, "--membind=0", "--cpunodebind=0", sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    try:
        assert p.stdout.readline().strip() == b"ready"
        ex = make_exporter(pid=p.pid, interval=1)
        try:
            snap = ex.sample_once()
            m = scrape(ex)
        finally:
            ex.stop()
        node0 = snap.topology.node(0).memory
        # the same sample's node figures, in bytes (node totals move while memory is onlined)
        assert value(m, "numatop_llm_node_memory_total_bytes", node="0") == node0.total_bytes > 0
        assert value(m, "numatop_llm_node_memory_free_bytes", node="0") == node0.free_bytes
        assert value(m, "numatop_llm_node_memory_used_bytes", node="0") == node0.used_bytes
        assert len(m["numatop_llm_node_memory_total_bytes"]) == len(snap.topology.nodes)
        # a plain process is role "other" without rank; its 96 MiB are on node 0
        assert value(m, "numatop_llm_engine_memory_bytes", node="0", role="other", rank="") >= 96 * MIB
        assert value(m, "numatop_llm_engine_attached") == 1
        assert "numatop_llm_engine_info" not in m  # not a vLLM engine: no config to show
        assert "numatop_llm_rank_info" not in m
    finally:
        p.kill()
        p.wait(timeout=10)


def test_vllm_shaped_tree_gives_per_rank_metrics(tmp_path, numactl):
    env = {"HF_TOKEN": "hf_mustnotleak"}
    with VllmShapedTree(tmp_path, tp=2, mib=48, threads=8, env=env, extra_argv=("--api-key", "sk-mustnotleak")) as t:
        ex = make_exporter(pid=t.worker_pids[1], interval=1)  # attach through a worker: same engine
        try:
            snap = ex.sample_once()
            text = generate_latest(ex.registry).decode()
        finally:
            ex.stop()
        m = parse_metrics(text)
        assert snap.engine.root_pid == t.pid
        assert "mustnotleak" not in text
        info = m["numatop_llm_engine_info"][0][0]
        assert info["tp"] == "2" and info["pp"] == "1" and info["kv_cache_gib"] == "1"
        assert info["bind"] == os.environ.get("VLLM_CPU_OMP_THREADS_BIND", info["bind"]) and "|" in info["bind"]
        assert info["model"] == str(t.model_dir)
        assert value(m, "numatop_llm_engine_processes", role="worker") == 2
        assert value(m, "numatop_llm_engine_processes", role="engine_core") == 1
        workers = {w.rank: w for w in snap.engine.workers()}
        assert sorted(workers) == [0, 1]
        for rank, w in workers.items():
            r = str(rank)
            home = str(w.home_node)
            assert w.policy.text == f"bind:{home}"
            assert value(m, "numatop_llm_rank_info", rank=r, node=home, label=f"Worker_TP{rank}", policy=w.policy.text)
            assert value(m, "numatop_llm_rank_local_bytes", rank=r, node=home) >= 48 * MIB
            assert value(m, "numatop_llm_engine_memory_bytes", node=home, role="worker", rank=r) >= 48 * MIB
            assert value(m, "numatop_llm_rank_remote_bytes", rank=r) == w.remote_bytes
            assert value(m, "numatop_llm_rank_threads", rank=r) == 8
            assert value(m, "numatop_llm_rank_off_node_threads", rank=r) == w.off_node_threads
            # no planner: headroom is what the bind node can still give, and there is plenty
            node = snap.topology.node(w.home_node).memory
            assert value(m, "numatop_llm_rank_headroom_bytes", rank=r, node=home) == node.vllm_available_bytes
            assert value(m, "numatop_llm_rank_will_oom", rank=r) == 0
        assert m["numatop_llm_headroom_source_info"][0][0]["source"] in ("node_available", "planner")
        # every process label set is low-cardinality: no pid or tid labels anywhere
        for name, samples in m.items():
            for labels, _ in samples:
                assert not {"pid", "tid", "thread"} & set(labels), name


def test_strict_bind_rank_in_a_full_cgroup_will_oom_and_its_kill_is_counted(tmp_path, numactl):
    """A real memcg OOM kill of worker rank 1, seen in /dev/kmsg and in the cgroup's counter."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a child memory cgroup and /dev/kmsg")
    try:
        cg = MemoryCgroup(f"numatop-llm-test-{os.getpid()}").__enter__()
    except (OSError, PermissionError) as exc:
        pytest.skip(f"cannot create a memory cgroup: {exc}")
    try:
        cg.set_limit(1024 * MIB)
        with VllmShapedTree(tmp_path, tp=2, mib=32, threads=4, cgroup_procs=cg.procs) as t:
            ex = make_exporter(pid=t.pid, interval=1)
            try:
                m = scrape(ex) if ex.sample_once() else {}
                assert value(m, "numatop_llm_rank_will_oom", rank="1") == 0
                assert value(m, "numatop_llm_oom_kills_total", role="worker", rank="1") == 0
                cgroup_before = value(m, "numatop_llm_cgroup_oom_kills_total")
                host_before = value(m, "numatop_llm_host_oom_kills_total", constraint="memcg")

                # leave the cgroup 100 MiB: below the "will OOM" floor for a strictly bound rank
                cg.set_limit(cg.usage() + 100 * MIB)
                ex.sample_once()
                m = scrape(ex)
                assert value(m, "numatop_llm_rank_will_oom", rank="1") == 1
                assert 0 < value(m, "numatop_llm_rank_headroom_bytes", rank="1", node="0") < WILL_OOM_MIN_BYTES

                victim = t.worker_pids[1]
                for _ in range(4):  # each SIGUSR1 touches 64 MiB more: the kernel kills it
                    try:
                        os.kill(victim, signal.SIGUSR1)
                    except ProcessLookupError:
                        break
                    time.sleep(0.5)
                deadline = time.monotonic() + 15
                while running(victim) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert not running(victim), "the worker was not OOM-killed"
                time.sleep(0.3)
                ex.sample_once()
                m = scrape(ex)
            finally:
                ex.stop()
        assert value(m, "numatop_llm_oom_kills_total", role="worker", rank="1") == 1
        assert value(m, "numatop_llm_oom_kills_total", role="worker", rank="0") == 0
        assert value(m, "numatop_llm_host_oom_kills_total", constraint="memcg") >= host_before + 1
        assert value(m, "numatop_llm_cgroup_oom_kills_total") >= cgroup_before + 1
    finally:
        cg.__exit__(None, None, None)


def test_discovers_an_engine_and_discovers_again_after_it_goes_away(tmp_path, numactl):
    ex = make_exporter(interval=1)
    try:
        with VllmShapedTree(tmp_path / "a", tp=1, mib=8, threads=2) as a:
            found = [c.root_pid for c in discover_engines(LIVE)]
            assert a.pid in found
            ex.sample_once()
            first = ex.attached_pid
            assert first in found
            assert value(scrape(ex), "numatop_llm_engine_attached") == 1
        if first != a.pid:
            pytest.skip(f"another vLLM engine (pid {first}) runs here; discovery rightly prefers it")
        # a's tree is gone: the next sample notices, and with nothing else running, detaches
        ex.sample_once()
        others = [c.root_pid for c in discover_engines(LIVE)]
        m = scrape(ex)
        if not others:
            assert ex.attached_pid is None
            assert value(m, "numatop_llm_engine_attached") == 0
            assert "numatop_llm_engine_info" not in m
            assert value(m, "numatop_llm_node_memory_total_bytes", node="0") > 0  # node metrics stay
        with VllmShapedTree(tmp_path / "b", tp=1, mib=8, threads=2) as b:
            ex.sample_once()
            m = scrape(ex)
            assert ex.attached_pid is not None and ex.attached_pid != a.pid
            if not others:
                assert ex.attached_pid == b.pid
                assert m["numatop_llm_engine_info"][0][0]["model"] == str(b.model_dir)
            assert value(m, "numatop_llm_engine_attached") == 1
            assert value(m, "numatop_llm_engine_attaches_total") == 2
    finally:
        ex.stop()


def test_with_pid_it_stays_on_that_engine_after_it_exits(tmp_path, numactl):
    with VllmShapedTree(tmp_path, tp=1, mib=8, threads=2) as t:
        ex = make_exporter(pid=t.pid, interval=1)
        ex.sample_once()
    try:
        ex.sample_once()
        m = scrape(ex)
        assert ex.attached_pid is None
        assert value(m, "numatop_llm_engine_attached") == 0
        assert value(m, "numatop_llm_engine_attaches_total") == 1
        assert value(m, "numatop_llm_degraded_reasons") >= 1  # "process N exited"
    finally:
        ex.stop()


def test_sampler_keeps_its_deadlines():
    ex = make_exporter(pid=os.getpid(), interval=0.2)
    t0 = time.monotonic()
    ex.start()
    time.sleep(2.0)
    ex.stop()
    elapsed = time.monotonic() - t0
    m = scrape(ex)
    samples = value(m, "numatop_llm_samples_total")
    deadlines = elapsed / 0.2 + 1
    assert 0.6 * deadlines <= samples <= deadlines + 1, (samples, deadlines)
    assert value(m, "numatop_llm_sample_duration_seconds") > 0
    assert value(m, "numatop_llm_sample_interval_seconds") == 0.2
    assert abs(value(m, "numatop_llm_last_sample_timestamp_seconds") - time.time()) < 5


def test_sampling_uses_the_shared_numa_maps_cadence(numactl):
    """Repeated samples reuse numa_maps while the process is unchanged (the TUI's rule)."""
    code = "b = bytearray(32 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ready', flush=True)\n"
    code += "import time; time.sleep(60)"
    p = subprocess.Popen([numactl, "--membind=0", sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        ex = make_exporter(pid=p.pid, interval=1)
        try:
            for _ in range(4):
                ex.sample_once()
            er = ex.reader.engine_reader
            assert er is not None and er.numa_maps_reused >= 1
            # and the bytes it reports equal a fresh full read
            fresh = SnapshotReader(LIVE, p.pid).read().engine.processes[0].node_bytes
            m = scrape(ex)
            assert (
                abs(value(m, "numatop_llm_engine_memory_bytes", node="0", role="other", rank="") - fresh[0]) < 4 * MIB
            )
        finally:
            ex.stop()
    finally:
        p.kill()
        p.wait(timeout=10)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


def test_remembers_the_engine_for_explain(tmp_path, numactl, monkeypatch):
    """A headless host has no TUI: the exporter keeps the last-engine record ``explain`` reads after a -9."""
    from numatop_llm.statedir import last_engine

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with VllmShapedTree(tmp_path / "tree", tp=2, mib=8, threads=2) as t:
        ex = Exporter(LIVE, pid=t.pid, interval=1, log=lambda _m: None)
        try:
            ex.sample_once()
        finally:
            ex.stop()
    record = last_engine()
    assert record is not None and record["root_pid"] == t.pid
    assert record["workers"] == 2
    assert {p["pid"] for p in record["processes"] if p["role"] == "worker"} == set(t.worker_pids)


def test_the_headless_exporter_never_imports_textual():
    code = (
        "import sys, numatop_llm.exporter, numatop_llm.commands.export, numatop_llm.commands.cli\n"
        "numatop_llm.commands.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))[:3])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
