"""Capture, argv/env rewriting and the masked diff: on literals and on real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from numatop_llm.launcher import CaptureError, capture, diff
from numatop_llm.launcher import argv as A
from numatop_llm.launcher.spec import cgroup_procs_files
from tests.test_launcher_fakes import fake_spec, fake_vllm_root, free_port

SERVE = ["/v/bin/python3", "/v/bin/vllm", "serve", "/m", "--port", "8000"]


# -- argv ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (SERVE, None),
        ([*SERVE, "--tensor-parallel-size", "2"], "2"),
        ([*SERVE, "-tp", "4"], "4"),
        ([*SERVE, "--tensor_parallel_size=8"], "8"),
        ([*SERVE, "-tp", "2", "--tensor-parallel-size=3"], "3"),  # argparse: last one wins
    ],
)
def test_get_flag_reads_every_spelling(argv, value):
    assert A.get_flag(argv, "--tensor-parallel-size") == value


def test_set_flag_keeps_spelling_and_position_and_drops_duplicates():
    assert A.set_flag(SERVE, "--tensor-parallel-size", "2") == [*SERVE, "--tensor-parallel-size", "2"]
    argv = [*SERVE[:4], "-tp", "1", "--port", "8000", "--tensor-parallel-size=5", "--enforce-eager"]
    assert A.set_flag(argv, "--tensor-parallel-size", "2") == [
        *SERVE[:4],
        "-tp",
        "2",
        "--port",
        "8000",
        "--enforce-eager",
    ]
    inline = [*SERVE, "--max-model-len=512"]
    assert A.set_flag(inline, "--max-model-len", "1024") == [*SERVE, "--max-model-len=1024"]


def test_flags_before_serve_are_never_touched():
    # "--port" inside the interpreter's own options must not be confused with vllm's
    argv = ["/usr/bin/python3", "-X", "dev", "/v/bin/vllm", "serve", "/m", "--port", "1"]
    assert A.args_start(argv) == 6
    assert A.set_flag(argv, "--port", "2")[:6] == argv[:6]
    assert A.remove_flag([*SERVE, "--enforce-eager"], "--enforce-eager", takes_value=False) == SERVE
    assert A.remove_flag([*SERVE, "-tp", "2"], "--tensor-parallel-size") == SERVE


# -- with_plan -----------------------------------------------------------------------------------
def test_with_plan_changes_only_what_differs():
    old = fake_spec()
    same = SimpleNamespace(tp=1, pp=1, bind="auto", kv_gib=1.0, reserved_cpus=None, max_model_len=None)
    assert old.with_plan(same).command() == old.command()
    assert old.with_plan(same).environment() == old.environment()
    new = old.with_plan(SimpleNamespace(tp=2, bind="0|1", kv_gib=2.5, reserved_cpus=1))
    assert new.command()[-2:] == ["--tensor-parallel-size", "2"]
    env = new.environment()
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1" and env["VLLM_CPU_KVCACHE_SPACE"] == "2.5"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    assert {k: v for k, v in env.items() if not k.startswith("VLLM_CPU")} == {
        k: v for k, v in old.environment().items() if not k.startswith("VLLM_CPU")
    }
    assert new.pid is None and old.pid == 1000  # the old spec is untouched
    back = new.with_plan(SimpleNamespace(tp=1, kv_gib=None))
    assert "--tensor-parallel-size" in back.argv and back.config.tensor_parallel_size == 1
    assert "VLLM_CPU_KVCACHE_SPACE" not in back.environment()


def test_with_plan_numactl_prefix_keeps_the_interpreter_as_argv0():
    new = fake_spec().with_plan(SimpleNamespace(tp=1), numactl_prefix="--cpunodebind=0 --membind=0")
    cmd = new.command(numactl_path="/usr/bin/numactl")
    assert cmd[:4] == ["/usr/bin/numactl", "--cpunodebind=0", "--membind=0", "/venv/bin/python3"]
    assert cmd[4:] == list(fake_spec().argv[1:])
    assert new.with_plan(SimpleNamespace(), numactl_prefix="").command() == list(fake_spec().argv)


# -- diff and masking ----------------------------------------------------------------------------
def test_diff_is_masked_and_names_each_change():
    old = fake_spec(env={"HF_TOKEN": "hf_oldsecretvalue"})
    old = old.with_changes({"--api-key": "sk-secretkey1"})
    new = old.with_changes({"--tensor-parallel-size": "2"}, {"VLLM_CPU_KVCACHE_SPACE": "4", "HF_TOKEN": "hf_newsecret"})
    lines = diff(old, new)
    text = "\n".join(lines)
    assert "hf_oldsecretvalue" not in text and "hf_newsecret" not in text and "sk-secretkey1" not in text
    assert "  --tensor-parallel-size: (unset) → 2" in lines
    assert "  env VLLM_CPU_KVCACHE_SPACE: 1 → 4" in lines
    assert "  env HF_TOKEN: set → set (secret, value masked)" in lines
    assert lines[0].startswith("- command:") and "--api-key ****" in lines[0]
    assert diff(old, old) == []
    assert "hf_oldsecretvalue" not in repr(old) and "sk-secretkey1" not in repr(old)
    assert {"hf_oldsecretvalue", "sk-secretkey1"} <= old.secret_values()


# -- capture on real processes -------------------------------------------------------------------
@pytest.fixture
def fake_vllm():
    with fake_vllm_root("spec") as fv:
        yield fv


def test_capture_reads_the_api_server_exactly_through_any_process_of_its_tree(fake_vllm):
    port = free_port()
    proc = fake_vllm.start(port, env={"HF_TOKEN": "hf_capturedsecret"}, args=("--api-key", "sk-capturedkey"))
    worker = _worker_of(proc.pid)
    for pid in (proc.pid, worker):
        spec = capture(pid)
        assert spec.pid == proc.pid
        assert spec.argv == tuple(proc.args)
        assert (
            spec.program == "/usr/bin/python3"
            and spec.exe
            and os.path.realpath(spec.exe).startswith("/usr/bin/python3")
        )
        assert spec.cwd == str(fake_vllm.root)
        assert (spec.uid, spec.gid, spec.port, spec.host) == (0, 0, port, "127.0.0.1")
        assert spec.model == str(fake_vllm.model)
        assert spec.environment()["HF_TOKEN"] == "hf_capturedsecret"  # real value, to restart with
        assert spec.api_key == "sk-capturedkey"
        assert "hf_capturedsecret" not in repr(spec) and "sk-capturedkey" not in str(spec.summary())


def _worker_of(pid: int, timeout: float = 20.0) -> int:
    from numatop_llm.launcher import LiveSystem

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [r.pid for r in LiveSystem().tree(pid) if r.label == "Worker"]
        if workers:
            return workers[0]
        time.sleep(0.05)
    raise AssertionError(f"no worker under {pid}")


def test_capture_refuses_gone_and_foreign_processes():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(CaptureError, match="not part of a `vllm serve` engine"):
            capture(p.pid)
    finally:
        p.kill()
        p.wait()
    with pytest.raises(CaptureError, match=f"no such process: {p.pid}"):
        capture(p.pid)
    with pytest.raises(CaptureError, match="no such process"):
        capture(0)


@pytest.mark.skipif(shutil.which("numactl") is None, reason="numactl not installed")
def test_capture_keeps_numactl_policy_and_affinity(fake_vllm):
    numactl = shutil.which("numactl")
    assert numactl
    prefix = (numactl, "--membind=0", "--physcpubind=0")
    proc = fake_vllm.start(free_port(), prefix=prefix)
    spec = capture(proc.pid)
    assert spec.numactl == ("--membind=0",)
    if len(os.sched_getaffinity(0)) > 1:
        assert spec.cpus_allowed == (0,)
    assert spec.command()[1:3] == ["--membind=0", "/usr/bin/python3"]
    assert any("memory policy" in n for n in spec.notes)


def test_capture_records_the_cgroup_a_restart_must_join(fake_vllm, tmp_path):
    from tests.exporter_support import MemoryCgroup

    try:
        cg = MemoryCgroup(f"numatop-launcher-{os.getpid()}").__enter__()
    except (PermissionError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot create a memory cgroup: {exc}")
        pytest.skip(f"cannot create a memory cgroup: {exc}")
    try:
        procs = str(cg.procs)

        def join() -> None:
            with open(procs, "w") as fh:
                fh.write("0")

        proc = fake_vllm.start(free_port(), preexec=join)
        spec = capture(proc.pid)
        assert cg.procs in cgroup_procs_files(spec)
        fake_vllm.stop_all()
    finally:
        cg.__exit__(None, None, None)


def test_fields_the_planner_fills_with_defaults_are_not_changes():
    from numatop_llm.launcher.spec import plan_changes

    old = fake_spec()
    baseline = SimpleNamespace(tp=1, pp=1, bind="auto", kv_gib=1.0, gpu_memory_utilization=0.92, dtype=None)
    config = SimpleNamespace(**{**vars(baseline), "tp": 2})
    assert plan_changes(old, config, baseline) == ({"--tensor-parallel-size": "2"}, {})
    # without a baseline the default would be written out
    assert plan_changes(old, config)[0] == {"--tensor-parallel-size": "2", "--gpu-memory-utilization": "0.92"}
    batched = SimpleNamespace(max_num_batched_tokens=4096)
    assert plan_changes(old, batched)[0] == {"--max-num-batched-tokens": "4096"}


def test_with_plan_takes_the_planners_own_config():
    planner = pytest.importorskip("numatop_llm.planner")
    old = fake_spec()
    base = planner.config_from_engine(old.config)
    assert old.with_plan(base).command() == old.command()
    new = old.with_plan(base.model_copy(update={"tp": 2, "bind": "0|1"}))
    assert new.command() == [*old.command(), "--tensor-parallel-size", "2"]
    assert new.environment()["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
