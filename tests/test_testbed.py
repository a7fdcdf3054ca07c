"""The real vLLM CPU testbed itself: engines answer, have the tree we expect, and leave nothing behind.

Real-engine tests share one engine through the session fixtures (see tests/testbed/fixtures.py); the
two teardown tests ride on the switches the session makes anyway (TP=1 → TP=2, TP=2 → custom), so
they add no engine start. Cost on 2 cores (quiet → busy machine): TP=1 start 19-56 s, TP=2 start
25-58 s + 7-24 s first completion, failed start 8-25 s, killed-starter sweep 15-30 s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.testbed.engine import (
    OWNER_FILE,
    SHM,
    TMP_PREFIX,
    EngineStartError,
    RunningEngine,
    _held_by_anyone,
    _sweep_stale,
    default_bind,
    free_port,
    testbed_ready,
    tiny_model_path,
)


def _alive(pid: int, starttime: int) -> bool:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(rest[19]) == starttime and rest[0] not in ("Z", "X")


def _group(pgid: int) -> list[int]:
    """Live members of a process group."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            rest = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[2] == str(pgid) and rest[0] not in ("Z", "X"):
            out.append(int(p))
    return out


def _shm_names_held(pid: int) -> set[str]:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {
        line.split()[-1].removeprefix("/dev/shm/")
        for line in maps
        if " /dev/shm/" in line and not line.endswith("(deleted)")
    }


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _affinity_of_threads(pid: int) -> set[frozenset[int]]:
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.add(frozenset(os.sched_getaffinity(int(task.name))))
        except OSError:
            continue
    return out


def _record(eng: RunningEngine) -> tuple[dict[int, int], set[str]]:
    tree = eng.tree_with_starttimes()
    shm = eng.shm_in_use()
    assert eng.tmpdir.is_dir() and eng.dist_idents(), "no vllm_dist_<uuid> FileStore in the engine's TMPDIR"
    return tree, shm


def _assert_gone(eng: RunningEngine, tree: dict[int, int], shm: set[str]) -> None:
    report = eng.stop_report
    assert report is not None, "the engine was not stopped"
    assert not report.killed, f"SIGTERM was not enough; log:\n{eng.log_tail()}"
    assert report.leftover == []
    alive = [p for p, s in tree.items() if _alive(p, s)]
    assert alive == [], f"processes of the stopped engine still alive: {alive}"
    left = sorted(n for n in shm if (SHM / n).exists())
    assert left == [], f"/dev/shm segments of the stopped engine remain: {left}"
    left = sorted(n for n in os.listdir(SHM) if any(i in n for i in eng.dist_idents()))
    assert left == [], f"/dev/shm segments named after the stopped engine remain: {left}"
    assert not eng.tmpdir.exists()
    assert report.kept == []


# ------------------------------------------------------------------------------------------------
# Without an engine
# ------------------------------------------------------------------------------------------------


def test_testbed_ready_names_what_is_missing_and_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMATOP_CACHE", str(tmp_path))
    reason = testbed_ready()
    assert reason and str(tmp_path / "vllm-0.32.0") in reason and "build_vllm.sh" in reason
    venv = tmp_path / "vllm-0.32.0"
    (venv / "bin").mkdir(parents=True)
    (venv / ".numatop-ready").touch()
    for name in ("python", "vllm"):
        (venv / "bin" / name).write_text("#!/bin/sh\n")
        (venv / "bin" / name).chmod(0o755)
    assert "config.json" in testbed_ready()
    model = tiny_model_path()
    assert model == tmp_path / "models" / "tiny-llama"
    model.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (model / name).touch()
    assert testbed_ready() is None


def test_free_port_is_free_and_default_bind_splits_cpus():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert default_bind(1) == "auto"
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*")))
    if nodes < 2 and len(os.sched_getaffinity(0)) >= 2:
        lists = default_bind(2).split("|")
        assert len(lists) == 2 and lists[0] != lists[1]
        if sorted(os.sched_getaffinity(0)) == [0, 1]:
            assert default_bind(2) == "0|1"


# ------------------------------------------------------------------------------------------------
# Real engines
# ------------------------------------------------------------------------------------------------


@pytest.mark.vllm
def test_tp1_answers_a_completion(vllm_engine_tp1):
    eng = vllm_engine_tp1
    answer = eng.complete("The capital of France is", max_tokens=8)
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["text"]
    assert answer["model"] == eng.model == str(tiny_model_path())
    # the tree vLLM 0.32 makes at TP=1: API server, EngineCore, one Worker
    titles = [c[0] for c in eng.cmdlines().values() if c]
    assert titles.count("VLLM::EngineCore") == 1
    assert list(eng.worker_pids()) == ["Worker"]
    status, metrics = eng.request("/metrics")
    assert status == 200 and b"vllm:num_requests_running" in metrics


@pytest.mark.vllm
def test_switching_to_tp2_stops_every_process_of_tp1(vllm_engines):
    eng1 = vllm_engines.get(tp=1)
    tree, shm = _record(eng1)
    assert len(tree) >= 4  # API server, resource tracker, EngineCore, Worker
    eng2 = vllm_engines.get(tp=2)
    assert eng2.pid != eng1.pid and not eng1.alive
    _assert_gone(eng1, tree, shm)


test_switching_to_tp2_stops_every_process_of_tp1.vllm_stage = 20  # between the TP=1 and TP=2 groups


@pytest.mark.vllm
def test_tp2_has_two_workers_pinned_as_bound(vllm_engine_tp2):
    eng = vllm_engine_tp2
    workers = eng.worker_pids()
    assert sorted(workers) == ["Worker_TP0", "Worker_TP1"]
    assert eng.bind == default_bind(2)
    cpus = [set(map(int, part.split(","))) for part in eng.bind.split("|")] if "|" in eng.bind else None
    for rank, name in enumerate(sorted(workers)):
        pinned = {a for a in _affinity_of_threads(workers[name]) if len(a) == 1}
        assert pinned, f"{name}: no thread pinned to a single CPU"
        if cpus is not None:
            assert set().union(*pinned) <= cpus[rank], (name, pinned, cpus[rank])
    # TP=2 talks through shared memory: the tree holds /dev/shm segments
    assert eng.shm_in_use()
    assert eng.complete("Hello", max_tokens=4)["usage"]["completion_tokens"] == 4


@pytest.mark.vllm
def test_releasing_tp2_stops_everything_and_removes_its_shm_segments(vllm_engines):
    eng = vllm_engines.get(tp=2)
    tree, shm = _record(eng)
    vllm_shm = {n for n in shm if any(n.startswith(i) for i in eng.dist_idents())}
    assert vllm_shm, shm  # the TP=2 "cpushm" segments: vLLM leaves them behind, the testbed removes them
    report = vllm_engines.release()
    assert report is eng.stop_report
    assert vllm_shm <= set(report.removed_shm)
    _assert_gone(eng, tree, shm)


test_releasing_tp2_stops_everything_and_removes_its_shm_segments.vllm_stage = 35  # after the TP=2 group


@pytest.mark.vllm
def test_failed_start_raises_with_the_log_tail_and_leaves_nothing(vllm_engine_factory):
    with pytest.raises(EngineStartError) as err:
        vllm_engine_factory(tp=1, extra_args=["--max-model-len", "not-a-number"], timeout=120)
    text = str(err.value)
    assert "exited with" in text and "max-model-len" in text and "not-a-number" in text
    eng = err.value.engine
    assert eng is not None and eng.stop_report is not None and eng.stop_report.leftover == []
    assert eng.proc.returncode not in (None, 0)
    assert not Path(f"/proc/{eng.pid}").exists()
    assert eng.log_path.is_file()  # kept for the reader of the failure
    eng.log_path.unlink()


@pytest.mark.vllm
def test_an_engine_whose_test_process_was_killed_is_swept_at_the_next_start(vllm_engine_factory):
    """SIGKILL of the process that started an engine, mid-start (its EngineCore already spawned).

    vLLM 0.32 does not stop then: the SIGTERM it gets (PDEATHSIG) leaves API server, EngineCore and
    Worker hanging. The next start (``_sweep_stale``) kills that group and removes its TMPDIR; an
    engine whose starter is alive is left alone.
    """
    before = set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"))
    shm_before = set(os.listdir(SHM))
    code = "from tests.testbed.engine import start_engine; start_engine(tp=1, timeout=120)"
    helper = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        owner = None
        deadline = time.monotonic() + 30
        while owner is None and time.monotonic() < deadline and helper.poll() is None:
            for d in set(Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*")) - before:
                try:
                    if len((d / OWNER_FILE).read_text().split()) == 5:
                        owner = d
                except OSError:
                    continue
            time.sleep(0.1)
        assert owner is not None, helper.stderr.read().decode() if helper.poll() is not None else "no owner file"
        pid, log = (owner / OWNER_FILE).read_text().split()[::4]
        deadline = time.monotonic() + 90
        pid = int(pid)
        while time.monotonic() < deadline and not any(_cmdline(p).startswith("VLLM::") for p in _group(pid)):
            time.sleep(0.2)
        assert any(_cmdline(p).startswith("VLLM::") for p in _group(pid)), _group(pid)
        assert str(owner) not in _sweep_stale()  # its starter is alive: not touched
        held = {n for p in _group(pid) for n in _shm_names_held(p)}
    finally:
        helper.kill()
        helper.wait(timeout=10)
    done = _sweep_stale()
    assert f"killed {pid}" in done and str(owner) in done, done
    assert _group(pid) == []
    assert not owner.exists()
    assert not Path(log).exists()
    left = sorted(n for n in held if (SHM / n).exists())
    assert left == [], f"/dev/shm segments of the killed engine remain: {left}"
    # its semaphores (unlinked by the resource tracker it lost): none left that no live process maps
    sems = {SHM / n for n in set(os.listdir(SHM)) - shm_before if n.startswith("sem.mp-")}
    assert sorted(sems - _held_by_anyone(sems)) == []
