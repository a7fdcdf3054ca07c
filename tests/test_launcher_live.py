"""Relaunch on the live machine (real processes, signals, sockets, /dev/shm, cgroups) with a fake vLLM tree.

Each fake engine starts in ~0.3 s, so these run in seconds; tests/test_relaunch_vllm.py does the
same against real vLLM engines.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from numatop_llm.launcher import OK, Journal, LiveSystem, ProcRef, Relaunch, capture
from tests.test_launcher_fakes import fake_vllm_root, free_port, tree_pids

SECRET = "hf_LiveSecretToken42"
API_KEY = "sk-LiveApiKey42"


@pytest.fixture
def fake_vllm():
    with fake_vllm_root("live") as fv:
        yield fv


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "state" / "relaunch.jsonl")


def environ_of(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in data.split(b"\0") if b"=" in item)


def cmdline_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def relaunch(old, new, journal, tmp_path, **kw):
    kw.setdefault("stop_timeout", 10)
    kw.setdefault("start_timeout", 30)
    kw.setdefault("verify_timeout", 30)
    kw.setdefault("poll_interval", 0.1)
    system = kw.pop("system", None) or LiveSystem(tmp=Path(old.environment().get("TMPDIR", "/tmp")))
    return Relaunch(old, new, journal=journal, log_dir=tmp_path / "logs", system=system, **kw)


def test_relaunch_a_live_tree_end_to_end(fake_vllm, journal, tmp_path):
    port = free_port()
    env = {"HF_TOKEN": SECRET, "TMPDIR": str(fake_vllm.root), "FAKE_DIST_DIR": str(fake_vllm.root)}
    proc = fake_vllm.start(port, env=env, args=("--api-key", API_KEY))
    # wait for the worker and its FileStore (seconds on a loaded 2-core machine)
    deadline = time.monotonic() + 20
    while True:
        old_tree = LiveSystem().tree(proc.pid)
        old_leftovers = LiveSystem(tmp=fake_vllm.root).leftovers(old_tree, str(fake_vllm.root))
        ready = len(old_tree) == 3 and any("vllm_dist_" in p for p in old_leftovers)
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    old = capture(proc.pid)
    assert [r.label for r in old_tree] == ["api_server", "EngineCore", "Worker"]
    assert any("psm_fake_" in p for p in old_leftovers) and any("vllm_dist_" in p for p in old_leftovers)
    assert any(stat.S_ISSOCK(os.stat(p).st_mode) for p in old_leftovers)  # its ipc socket file
    new = old.with_plan(SimpleNamespace(tp=2, bind="0", kv_gib=2))
    events = []
    outcome = relaunch(old, new, journal, tmp_path, on_step=events.append).run()
    assert outcome.ok, (outcome.message, outcome.log_tail)
    assert [s.status for s in outcome.steps] == [OK, "skipped", OK, OK, OK, OK, OK, OK, OK]
    pid = outcome.new_pid
    try:
        # the old tree is gone, nothing of it is left
        assert not any(LiveSystem().alive(r) for r in old_tree)
        assert not any(os.path.lexists(p) for p in old_leftovers)
        # the new engine: the same command with the plan's changes, its own session, same cwd and env
        assert cmdline_of(pid) == [*old.argv, "--tensor-parallel-size", "2"]
        assert os.getsid(pid) == pid and os.readlink(f"/proc/{pid}/cwd") == str(fake_vllm.root)
        env_new = environ_of(pid)
        assert env_new["HF_TOKEN"] == SECRET
        assert env_new["VLLM_CPU_OMP_THREADS_BIND"] == "0" and env_new["VLLM_CPU_KVCACHE_SPACE"] == "2"
        assert {k: v for k, v in env_new.items() if not k.startswith("VLLM_CPU")} == {
            k: v for k, v in old.environment().items() if not k.startswith("VLLM_CPU")
        }
        verify = next(s for s in outcome.steps if s.name == "verify")
        assert "4 tokens" in verify.message  # the request carried the API key
        log = Path(outcome.log_path or "")
        assert log.parent == tmp_path / "logs" and oct(log.stat().st_mode & 0o777) == "0o600"
        assert "fake vllm serve" in log.read_text()
        # the journal: every step, nothing secret
        text = journal.path.read_text()
        assert SECRET not in text and API_KEY not in text
        steps = [json.loads(x) for x in text.splitlines() if '"event":"step"' in x]
        assert [s["name"] for s in steps] == [s.name for s in outcome.steps]
        start = next(s for s in steps if s["name"] == "start")
        assert start["detail"]["pid"] == pid and "****" in start["detail"]["command"]
        assert SECRET not in repr(events) + repr(outcome)
    finally:
        fake_vllm.stop_all()


def test_relaunch_drops_privileges_to_the_engine_user(fake_vllm, journal, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to start an engine as another user")
    proc = fake_vllm.start(free_port(), user=65534, group=65534)
    old = capture(proc.pid)
    assert (old.uid, old.gid) == (65534, 65534)
    outcome = relaunch(old, old.with_plan(SimpleNamespace(tp=2)), journal, tmp_path).run()
    assert outcome.ok, (outcome.message, outcome.log_tail)
    status = Path(f"/proc/{outcome.new_pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert uid_line.split()[1:] == ["65534"] * 4 and gid_line.split()[1:] == ["65534"] * 4
    for child in tree_pids(outcome.new_pid):
        assert Path(f"/proc/{child}").stat().st_uid == 65534


def test_sigterm_ignored_means_sigkill_after_the_timeout(fake_vllm, journal, tmp_path):
    proc = fake_vllm.start(free_port(), env={"FAKE_IGNORE_TERM": "1"})
    old = capture(proc.pid)
    old_tree = LiveSystem().tree(proc.pid)
    new = old.with_changes(env={"FAKE_IGNORE_TERM": None})
    outcome = relaunch(old, new, journal, tmp_path, stop_timeout=1.5).run()
    assert outcome.ok, outcome.message
    stop = next(s for s in outcome.steps if s.name == "stop")
    assert "SIGKILL sent to" in stop.message and 1.5 <= stop.seconds < 8
    assert proc.wait(timeout=5) == -9
    assert len(old_tree) == 3 and not any(LiveSystem().alive(r) for r in old_tree)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"FAKE_FAIL": "exit"}, "exited with code 3"),
        ({"VLLM_CPU_OMP_THREADS_BIND": "0|4096"}, "exited with code 3"),
        ({"FAKE_FAIL": "kill9"}, "exited with code 1"),
        ({"FAKE_FAIL": "completion"}, "HTTP 500"),
    ],
)
def test_a_failing_new_engine_rolls_back_to_the_old_command(fake_vllm, journal, tmp_path, change, expect):
    port = free_port()
    proc = fake_vllm.start(port, env={"HF_TOKEN": SECRET})
    old = capture(proc.pid)
    new = old.with_changes({"--tensor-parallel-size": "2"}, change)
    outcome = relaunch(old, new, journal, tmp_path).run()
    assert not outcome.ok and outcome.rolled_back, outcome.message
    failed = [s for s in outcome.steps if s.status == "failed"]
    assert len(failed) == 1 and expect in failed[0].message
    assert [s.name for s in outcome.steps][-6:] == [
        "rollback stop",
        "rollback port",
        "rollback cleanup",
        "rollback start",
        "rollback health",
        "rollback verify",
    ]
    back = outcome.new_pid
    assert cmdline_of(back) == list(old.argv) and environ_of(back) == old.environment()
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert r.status == 200
    if change.get("FAKE_FAIL") == "kill9":
        assert "Worker proc" in outcome.log_tail and any("signal 9" in e for e in outcome.explanations)
    # only the rolled-back tree holds fake segments now: the failed one's were removed
    held = {p for p in LiveSystem().leftovers(LiveSystem().tree(back))}
    leftover = {str(p) for p in Path("/dev/shm").glob(f"psm_fake_{proc.pid}_*")}
    assert not leftover, leftover
    assert held and all(f"psm_fake_{back}_" in p for p in held)
    assert SECRET not in journal.path.read_text()


def test_drain_waits_for_a_request_in_flight(fake_vllm, journal, tmp_path):
    import urllib.request

    port = free_port()
    proc = fake_vllm.start(port)
    old = capture(proc.pid)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    done: dict = {}

    def long_request() -> None:
        body = json.dumps({"model": "m", "prompt": "x", "max_tokens": 16, "seconds": 3}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        with opener.open(req, timeout=30) as r:
            done["status"] = r.status
            done["tokens"] = json.loads(r.read())["usage"]["completion_tokens"]
        done["at"] = time.monotonic()

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.5)
    stop_started: list[float] = []

    def on_step(step) -> None:
        if step.name == "stop" and not stop_started:
            stop_started.append(time.monotonic())

    outcome = relaunch(old, old, journal, tmp_path, on_step=on_step).run()
    t.join(10)
    assert outcome.ok, outcome.message
    assert done == {"status": 200, "tokens": 16, "at": done["at"]}
    assert done["at"] <= stop_started[0]
    drain = next(s for s in outcome.steps if s.name == "drain")
    assert drain.seconds >= 1.5 and "1 running" in drain.message


def test_a_restart_joins_the_old_engines_cgroup(fake_vllm, journal, tmp_path):
    from tests.exporter_support import MemoryCgroup

    try:
        cg = MemoryCgroup(f"numatop-relaunch-{os.getpid()}").__enter__()
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot create a memory cgroup: {exc}")
        pytest.skip(f"cannot create a memory cgroup: {exc}")
    try:
        procs = str(cg.procs)

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write("0")

        proc = fake_vllm.start(free_port(), preexec=join)
        old = capture(proc.pid)
        outcome = relaunch(old, old, journal, tmp_path).run()
        assert outcome.ok, outcome.message
        rel = "/" + str(cg.dir.relative_to(Path("/sys/fs/cgroup") / ("memory" if cg.version == 1 else "")))
        for pid in tree_pids(outcome.new_pid):
            assert rel in Path(f"/proc/{pid}/cgroup").read_text(), pid
    finally:
        fake_vllm.stop_all()
        cg.__exit__(None, None, None)


def test_live_system_never_signals_a_reused_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = LiveSystem()
        ref = live.proc_ref(p.pid)
        assert ref is not None and live.alive(ref)
        impostor = ProcRef(p.pid, ref.starttime + 1)
        assert not live.alive(impostor) and not live.kill(impostor, 9)
        assert p.poll() is None
        assert live.kill(ref, 15) and p.wait(timeout=5) == -15
        assert not live.alive(ref)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_live_system_port_checks():
    live = LiveSystem()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not live.port_free("127.0.0.1", port)
        assert live.port_owner(port) == os.getpid()
    assert live.port_free("127.0.0.1", port)
    assert live.port_owner(port) is None
