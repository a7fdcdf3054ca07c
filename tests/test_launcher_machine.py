"""The relaunch state machine on a fake machine with a fake clock: every path, every timeout."""

from __future__ import annotations

import dataclasses
import json
import signal
from types import SimpleNamespace

import pytest

from numatop_llm.launcher import FAILED, OK, RUNNING, SKIPPED, Journal, Relaunch, read_history
from tests.test_launcher_fakes import FakeSystem, fake_spec

MAIN = ["capture", "plan", "drain", "stop", "port", "cleanup", "start", "health", "verify"]
ROLLBACK = [
    "rollback stop",
    "rollback port",
    "rollback cleanup",
    "rollback start",
    "rollback health",
    "rollback verify",
]


@pytest.fixture(autouse=True)
def state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "relaunch.jsonl")


def setup(tp_new: int = 2, **old_kw):
    fs = FakeSystem()
    eng = fs.add_engine(**old_kw)
    old = fake_spec(pid=eng.root)
    new = old.with_changes({"--tensor-parallel-size": str(tp_new)}, {"VLLM_CPU_OMP_THREADS_BIND": "0|1"})
    return fs, eng, old, new


def final(outcome):
    return [(s.name, s.status) for s in outcome.steps]


def test_success_runs_every_step_in_order_and_journals_them(journal):
    fs, eng, old, new = setup()
    events = []
    outcome = Relaunch(old, new, system=fs, journal=journal, on_step=events.append).run()
    assert outcome.ok and not outcome.rolled_back, outcome.message
    assert final(outcome) == [(n, SKIPPED if n == "plan" else OK) for n in MAIN]
    assert outcome.new_pid not in (None, eng.root)
    assert [s.command()[-2:] for s in fs.spawned_specs] == [["--tensor-parallel-size", "2"]]
    assert fs.signals[0] == (eng.root, signal.SIGTERM)
    assert f"/dev/shm/psm_{eng.root}" in fs.removed
    # every step reported running, then its result
    assert list(dict.fromkeys(e.name for e in events if e.status == RUNNING)) == MAIN
    assert "TP" not in outcome.message or "tensor" in outcome.message
    assert "--tensor-parallel-size" in outcome.message
    lines = [json.loads(x) for x in journal.path.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["begin"] + ["step"] * len(MAIN) + ["end"]
    assert [x["name"] for x in lines if x["event"] == "step"] == MAIN
    assert all("ts" in x and "seconds" in x for x in lines if x["event"] == "step")
    records, problems = read_history(journal.path)
    assert not problems and len(records) == 1 and records[0].status == "ok"
    assert records[0].new_pid == outcome.new_pid and records[0].old_pid == eng.root


def test_drain_waits_for_requests_in_flight_with_a_countdown(journal):
    fs, _eng, old, new = setup()
    fs.metrics = lambda now: (2.0, 1.0) if now < 10 else (0.0, 0.0)
    events = []
    outcome = Relaunch(old, new, system=fs, journal=journal, on_step=events.append, drain_timeout=60).run()
    assert outcome.ok
    drain = next(s for s in outcome.steps if s.name == "drain")
    assert 10 <= drain.seconds < 11
    assert "2 running and 1 waiting" in drain.message
    countdowns = [e.countdown for e in events if e.name == "drain" and e.status == RUNNING and e.countdown]
    assert countdowns[0] > 59 and countdowns[-1] < 51 and countdowns == sorted(countdowns, reverse=True)
    assert "2 running, 1 waiting" in next(e.message for e in events if e.countdown)


def test_drain_timeout_changes_nothing(journal):
    fs, eng, old, new = setup()
    fs.metrics = lambda now: (1.0, 0.0)
    outcome = Relaunch(old, new, system=fs, journal=journal, drain_timeout=30).run()
    assert not outcome.ok and not outcome.rolled_back
    assert final(outcome)[-1] == ("drain", FAILED)
    assert "still 1 running" in outcome.message and "nothing changed" in outcome.message
    assert fs.signals == [] and fs.spawned_specs == []
    assert outcome.new_pid == eng.root  # the old engine still serves


def test_no_drain_skips_the_metrics(journal):
    fs, _eng, old, new = setup()
    fs.metrics = lambda now: pytest.fail("metrics read despite --no-drain")
    outcome = Relaunch(old, new, system=fs, journal=journal, no_drain=True).run()
    assert outcome.ok and ("drain", SKIPPED) in final(outcome)


def test_unreadable_metrics_fail_the_drain(journal):
    fs, _eng, old, new = setup()
    fs.metrics_status = 404
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert final(outcome)[-1] == ("drain", FAILED) and "--no-drain" in outcome.message
    assert fs.signals == []


def test_stop_timeout_sends_sigkill_and_reports_it(journal):
    fs, eng, old, new = setup(term_seconds=None)  # ignores SIGTERM
    outcome = Relaunch(old, new, system=fs, journal=journal, stop_timeout=5).run()
    assert outcome.ok, outcome.message
    stop = next(s for s in outcome.steps if s.name == "stop")
    assert stop.status == OK and "SIGKILL sent to 3 process(es)" in stop.message
    assert 5 <= stop.seconds < 6
    assert {(p, signal.SIGKILL) for p in eng.pids} <= set(fs.signals)
    assert stop.detail["sigkill"] == eng.pids


def test_new_engine_exits_then_rollback_answers_again(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [{"dies_after": 3, "healthy_after": 99, "exit_code": 1, "log": "ValueError: bad bind list\n"}]
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert not outcome.ok and outcome.rolled_back
    assert final(outcome) == [(n, SKIPPED if n == "plan" else OK) for n in MAIN[:-2]] + [("health", FAILED)] + [
        (n, OK) for n in ROLLBACK
    ]
    health = next(s for s in outcome.steps if s.name == "health")
    assert "exited with code 1" in health.message
    assert fs.spawned_specs[1] is old  # the old command, exactly
    assert outcome.new_pid == fs.engines[-1].root
    assert "rolled back" in outcome.message and "bad bind list" in outcome.log_tail
    # the failed engine's leftovers went too
    assert f"/dev/shm/psm_{fs.engines[1].root}" in fs.removed
    assert [r.status for r in read_history(journal.path)[0]] == ["rolled back"]


def test_worker_killed_by_sigkill_is_explained(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [
        {"dies_after": 4, "healthy_after": 99, "exit_code": 1, "log": "Worker proc died unexpectedly (exit code: -9)\n"}
    ]
    fs.oom_text = ["Worker_TP1 (pid 1234) was killed by the kernel's OOM killer; its cgroup hit its memory limit."]
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert outcome.rolled_back
    assert outcome.explanations == tuple(fs.oom_text)
    assert "OOM killer" in outcome.message


def test_sigkill_in_the_log_without_kernel_report_still_says_so(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [
        {"dies_after": 4, "healthy_after": 99, "log": "Worker proc VllmWorker-1 died unexpectedly (exit code: -9)\n"}
    ]
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert outcome.rolled_back and "signal 9" in outcome.explanations[0]


def test_health_timeout_stops_the_new_tree_and_rolls_back(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [{"healthy_after": 10_000}]
    outcome = Relaunch(old, new, system=fs, journal=journal, start_timeout=20).run()
    assert outcome.rolled_back
    health = next(s for s in outcome.steps if s.name == "health")
    assert health.status == FAILED and 20 <= health.seconds < 21
    bad = fs.engines[1]
    assert (bad.root, signal.SIGTERM) in fs.signals and bad.dead_at is not None
    rb_stop = next(s for s in outcome.steps if s.name == "rollback stop")
    assert "exited" in rb_stop.message


def test_failed_completion_rolls_back(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [{"completion_status": 500}]
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert outcome.rolled_back
    verify = next(s for s in outcome.steps if s.name == "verify")
    assert verify.status == FAILED and "HTTP 500" in verify.message


def test_rollback_failing_too_says_no_engine_runs(journal):
    fs, _eng, old, new = setup()
    fs.spawn_plans = [{"dies_after": 1, "healthy_after": 9}, {"dies_after": 1, "healthy_after": 9}]
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert not outcome.ok and not outcome.rolled_back and outcome.new_pid is None
    assert "NO ENGINE IS RUNNING" in outcome.message
    assert ("rollback health", FAILED) in final(outcome)


def test_busy_port_fails_before_starting_anything_new(journal):
    fs, _eng, old, new = setup()
    fs.port_blocked_by = 4242
    outcome = Relaunch(old, new, system=fs, journal=journal, port_timeout=3).run()
    port = next(s for s in outcome.steps if s.name == "port")
    assert port.status == FAILED and "in use by pid 4242" in port.message
    assert fs.spawned_specs == []
    assert "NO ENGINE IS RUNNING" in outcome.message
    assert ("rollback stop", SKIPPED) in final(outcome)


@pytest.mark.parametrize("verdict", ["oom", "error"])
def test_blocking_verdict_is_refused_unless_forced(journal, verdict):
    plan = SimpleNamespace(verdict=verdict, errors=["rank 0 needs 31 GiB, node 0 has 29 GiB"], findings=[])
    fs, _, old, new = setup()
    outcome = Relaunch(old, new, system=fs, journal=journal, plan=plan).run()
    assert not outcome.ok and final(outcome)[-1] == ("plan", FAILED)
    assert "--force" in outcome.message and "31 GiB" in outcome.message
    assert fs.signals == [] and fs.spawned_specs == []
    fs, _eng, old, new = setup()
    forced = Relaunch(old, new, system=fs, journal=journal, plan=plan, force=True).run()
    assert forced.ok and "--force" in next(s.message for s in forced.steps if s.name == "plan")


def test_fitting_plan_passes(journal):
    fs, _eng, old, new = setup()
    outcome = Relaunch(old, new, system=fs, journal=journal, plan=SimpleNamespace(verdict="fits")).run()
    assert outcome.ok and next(s for s in outcome.steps if s.name == "plan").message == "verdict fits"


def test_missing_planner_needs_force(journal):
    fs, _, old, new = setup()
    outcome = Relaunch(old, new, system=fs, journal=journal, plan_error="planner unavailable: no module").run()
    assert final(outcome)[-1] == ("plan", FAILED) and fs.signals == []
    fs, _eng, old, new = setup()
    outcome = Relaunch(old, new, system=fs, journal=journal, plan_error="planner unavailable: x", force=True).run()
    assert outcome.ok


def test_vanished_engine_fails_at_capture(journal):
    fs, eng, old, new = setup()
    eng.dead_at = 0.0
    outcome = Relaunch(old, new, system=fs, journal=journal).run()
    assert final(outcome) == [("capture", FAILED)] and "has exited" in outcome.message


def test_cancel_while_draining(journal):
    fs, _eng, old, new = setup()
    fs.metrics = lambda now: (1.0, 0.0)
    relaunch = Relaunch(old, new, system=fs, journal=journal)

    def on_step(step):
        if step.name == "drain" and step.countdown is not None and step.seconds > 3:
            relaunch.cancel()

    relaunch.on_step = on_step
    outcome = relaunch.run()
    assert final(outcome)[-1] == ("drain", FAILED) and "cancelled" in outcome.message and fs.signals == []


def test_a_broken_display_callback_does_not_break_the_relaunch(journal):
    fs, _eng, old, new = setup()

    def boom(step):
        raise RuntimeError("widget gone")

    relaunch = Relaunch(old, new, system=fs, journal=journal, on_step=boom)
    assert relaunch.run().ok and relaunch.callback_errors


def test_secrets_never_reach_steps_outcome_or_journal(journal):
    fs = FakeSystem()
    eng = fs.add_engine()
    old = fake_spec(pid=eng.root, env={"HF_TOKEN": "hf_TopSecretValue", "VLLM_API_KEY": "sk-ApiKeyValue"})
    old = dataclasses.replace(old, argv=(*old.argv, "--api-key", "sk-ApiKeyValue"), _api_key="sk-ApiKeyValue")
    new = old.with_changes({"--tensor-parallel-size": "2"})
    fs.spawn_plans = [
        {"dies_after": 2, "healthy_after": 99, "log": "args: api_key='sk-ApiKeyValue' token hf_TopSecretValue\n"}
    ]
    events = []
    outcome = Relaunch(old, new, system=fs, journal=journal, on_step=events.append).run()
    assert outcome.rolled_back
    blob = json.dumps(outcome.to_json()) + repr(events) + journal.path.read_text() + repr(old) + repr(new)
    assert "hf_TopSecretValue" not in blob and "sk-ApiKeyValue" not in blob
    assert "****" in outcome.log_tail
    # but the process gets the real values
    assert fs.spawned_specs[0].environment()["HF_TOKEN"] == "hf_TopSecretValue"
    assert "sk-ApiKeyValue" in fs.spawned_specs[0].command()


def test_launcher_and_its_commands_never_import_textual():
    import subprocess
    import sys

    code = (
        "import sys, numatop_llm.launcher, numatop_llm.launcher.relaunch, numatop_llm.launcher.system, numatop_llm.launcher.journal, numatop_llm.commands.relaunch\n"
        "from numatop_llm.commands.cli import build_parser; build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
