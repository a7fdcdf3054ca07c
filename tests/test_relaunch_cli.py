"""``numatop-llm relaunch`` and ``numatop-llm history`` as a user runs them (subprocesses, fake vLLM trees)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from numatop_llm.launcher import LiveSystem
from tests.test_launcher_fakes import fake_vllm_root, free_port

REPO = Path(__file__).resolve().parent.parent
SECRET = "hf_CliSecretToken77"


@pytest.fixture
def fake_vllm():
    with fake_vllm_root("cli") as fv:
        yield fv


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


def cli(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_STATE_HOME=str(state), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(out: subprocess.CompletedProcess, rc: int, text: str) -> None:
    assert out.returncode == rc, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], out.stderr


def test_bad_input_is_one_line_and_exit_2(fake_vllm, state):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    one_line_error(cli(state, "relaunch", "--pid", str(gone.pid), "--dry-run"), 2, f"no such process: {gone.pid}")
    one_line_error(cli(state, "relaunch", "--pid", str(os.getpid()), "--dry-run"), 2, "not part of a `vllm serve`")
    proc = fake_vllm.start(free_port())
    pid = str(proc.pid)
    for args, text in [
        (["--tp", "0"], "--tp must be between 1 and 4096"),
        (["--kv-gib", "-1"], "--kv-gib must be a positive"),
        (["--bind", "0-1|"], "expected auto, nobind or CPU lists"),
        (["--bind", "a-b"], "expected auto, nobind or CPU lists"),
        (["--numactl=--membind='0"], "--numactl: No closing quotation"),
        (["--drain-timeout", "0"], "--drain-timeout must be between"),
        (["--tp", "two"], "invalid int value"),
    ]:
        one_line_error(cli(state, "relaunch", "--pid", pid, *args, "--dry-run"), 2, text)
    # without a terminal and without --yes: refused, nothing happens
    out = cli(state, "relaunch", "--pid", pid, "--tp", "2")
    one_line_error(out, 2, "refusing to relaunch without --yes: stdin is not a terminal")
    assert proc.poll() is None and not state.exists()


def test_dry_run_shows_the_diff_changes_nothing_and_hides_secrets(fake_vllm, state):
    proc = fake_vllm.start(free_port(), env={"HF_TOKEN": SECRET}, args=("--api-key", "sk-CliKey77"))
    before = LiveSystem().tree(proc.pid)
    out = cli(state, "relaunch", "--pid", str(proc.pid), "--tp", "2", "--bind", "0", "--kv-gib", "2", "--dry-run")
    assert out.returncode in (0, 1), out.stderr  # 1 when the planner cannot vouch for the plan
    text = out.stdout + out.stderr
    assert "  --tensor-parallel-size: (unset) → 2" in text
    assert "  env VLLM_CPU_OMP_THREADS_BIND: auto → 0" in text and "  env VLLM_CPU_KVCACHE_SPACE: 1 → 2" in text
    assert "dry run: nothing changed" in text
    assert "--gpu-memory-utilization" not in text  # a planner default is not a change
    assert SECRET not in text and "sk-CliKey77" not in text
    forced = cli(state, "relaunch", "--pid", str(proc.pid), "--tp", "2", "--dry-run", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    doc = json.loads(forced.stdout)
    assert doc["dry_run"] is True and doc["refused"] is None
    assert doc["new"]["tensor_parallel_size"] == 2 and doc["old"]["pid"] == proc.pid
    assert "--api-key" in doc["old"]["command"] and "****" in doc["old"]["command"]
    assert SECRET not in forced.stdout and "sk-CliKey77" not in forced.stdout
    # nothing changed: same processes (same start times), no journal, no log
    assert LiveSystem().tree(proc.pid) == before and all(LiveSystem().alive(r) for r in before)
    assert not state.exists()


def test_planner_missing_or_failing_refuses_without_force(fake_vllm, state):
    proc = fake_vllm.start(free_port())
    out = cli(state, "relaunch", "--pid", str(proc.pid), "--tp", "2", "--yes")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "refused:" in out.stderr and "--force" in out.stderr
    assert "planner" in out.stdout  # the one line saying why there is no verdict
    assert proc.poll() is None


def test_relaunch_rollback_and_history(fake_vllm, state):
    port = free_port()
    proc = fake_vllm.start(port, env={"HF_TOKEN": SECRET})
    out = cli(state, "relaunch", "--pid", str(proc.pid), "--tp", "2", "--bind", "0", "--yes", "--force", "--json")
    assert out.returncode == 0, (out.stdout, out.stderr)
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["old_pid"] == proc.pid and doc["new_pid"] != proc.pid
    assert {"drain", "stop", "health", "verify"} <= set(doc["timings"])
    assert SECRET not in out.stdout + out.stderr
    first = doc["new_pid"]
    # a bad bind list: the new engine exits at start-up, the previous command comes back
    out = cli(state, "relaunch", "--pid", str(first), "--bind", "0|4096", "--tp", "2", "--yes", "--force")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "rolled back to the old command" in out.stdout
    assert "[FAIL] health" in out.stdout and "exited with code 3" in out.stdout
    assert "CPU 4096 is not allowed" in out.stdout  # the log tail
    assert SECRET not in out.stdout + out.stderr
    back = LiveSystem().tree(first)
    assert not back  # the rolled-back engine is a new process
    servers = fake_vllm.running_api_servers()
    assert len(servers) == 1
    assert "--tensor-parallel-size" in Path(f"/proc/{servers[0]}/cmdline").read_text()
    hist = cli(state, "history")
    assert hist.returncode == 0
    rows = [line for line in hist.stdout.splitlines() if not line.startswith(" ")]
    assert len(rows) == 2 and " ok " in rows[0] and "rolled back" in rows[1], hist.stdout
    assert "rolled back to the old command" in hist.stdout.splitlines()[2]
    assert f"pid {proc.pid} → {first}" in rows[0]
    hj = json.loads(cli(state, "history", "--json").stdout)
    assert [r["status"] for r in hj["relaunches"]] == ["ok", "rolled back"]
    assert [s["name"] for s in hj["relaunches"][1]["steps"]][-1] == "rollback verify"
    journal = (state / "numatop-llm" / "relaunch.jsonl").read_text()
    assert SECRET not in journal and journal.count('"event":"begin"') == 2


def test_history_without_journal_and_with_garbage(state):
    out = cli(state, "history")
    assert out.returncode == 0 and "no relaunch in the journal yet" in out.stdout
    (state / "numatop-llm").mkdir(parents=True)
    (state / "numatop-llm" / "relaunch.jsonl").write_text('{"run": "a", "event": "begin", "ts": 1}\nnot json\n')
    out = cli(state, "history", "--json")
    doc = json.loads(out.stdout)
    assert doc["relaunches"][0]["status"] == "unfinished" and "garbled" in doc["problems"][0]
    one_line_error(cli(state, "history", "--limit", "-1"), 2, "--limit must be 0 or more")
