"""``numatop-llm export`` as a user runs it: loopback by default, a port in use refused, clean stop on signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO
from tests.exporter_support import ExporterProcess, parse_metrics


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def listening(pid: int) -> list[tuple[str, int]]:
    return [c.laddr[:2] for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]


def test_refuses_a_port_in_use_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("export", "--listen", f"127.0.0.1:{port}", "--interval", "1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in out.stderr and "serving" not in out.stdout


def test_binds_loopback_by_default():
    help_text = run_cli("export", "--help").stdout
    assert "127.0.0.1:9464" in help_text
    # the default address, for real: either it serves on 127.0.0.1:9464 or it says that is taken
    proc = subprocess.Popen(
        [sys.executable, "-m", "numatop_llm", "export", "--interval", "1", "--no-kernel-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        if proc.poll() is not None or not line:
            proc.wait(timeout=30)
            assert proc.returncode == 2
            err = proc.stderr.read()
            assert "127.0.0.1:9464" in err and "already in use" in err
            return
        assert "serving http://127.0.0.1:9464/metrics" in line
        assert listening(proc.pid) == [("127.0.0.1", 9464)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def test_a_bare_port_also_means_loopback_only():
    with ExporterProcess("--listen", "0", "--interval", "1", "--no-kernel-log") as ex:
        assert listening(ex.pid) == [("127.0.0.1", ex.port)]
        # the first sample is taken before the exporter says it is serving
        assert "numatop_llm_node_memory_total_bytes" in ex.scrape()


def test_any_interface_only_when_asked_and_with_a_note():
    proc = subprocess.Popen(
        [sys.executable, "-m", "numatop_llm", "export", "--listen", "0.0.0.0:0", "--interval", "1", "--no-kernel-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        assert "serving http://0.0.0.0:" in line, line
        port = int(line.split("0.0.0.0:")[1].split("/")[0])
        assert listening(proc.pid) == [("0.0.0.0", port)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert "reachable from the network" in err


def samples_at_least(n: int):
    def check(text: str) -> bool:
        return parse_metrics(text).get("numatop_llm_samples_total", [({}, 0)])[0][1] >= n

    return check


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_a_signal(sig):
    ex = ExporterProcess("--pid", str(os.getpid()), "--interval", "0.2", "--no-kernel-log")
    with ex:
        m = parse_metrics(ex.wait_for(samples_at_least(2)))
        assert m["numatop_llm_engine_attached"][0][1] == 1
        t0 = time.monotonic()
        err = ex.stop(sig)
        took = time.monotonic() - t0
    assert ex.proc.returncode == 0, err
    assert took < 5
    assert f"stopped ({signal.Signals(sig).name})" in err
    assert "Traceback" not in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ex.port), timeout=1).close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--listen", ":9464"], "give a host"),
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "0 to 65535"),
        (["--interval", "0"], "--interval"),
        (["--pid", "999999999"], "no such process"),
        (["--listen", "203.0.113.7:0"], "no such address"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, words):
    out = run_cli("export", *args, "--no-kernel-log")
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr


def test_export_from_a_fixture_tree(seed_roots):
    """--proc/--sys: the seed box's eight nodes, no engine, and no kernel log of this machine."""
    with ExporterProcess("--proc", str(seed_roots.proc), "--sys", str(seed_roots.sys), "--interval", "1") as ex:
        m = parse_metrics(ex.wait_for(samples_at_least(1)))
    nodes = {lab["node"] for lab, _ in m["numatop_llm_node_memory_total_bytes"]}
    assert nodes == {str(i) for i in range(8)}
    assert m["numatop_llm_engine_attached"][0][1] == 0
    assert all(v == 0 for _, v in m["numatop_llm_host_oom_kills_total"])


def test_a_starved_exporter_counts_late_samples_and_does_not_catch_up():
    """Stopped for 2 s (as a busy host starves it): late samples are counted, missed ones are not replayed."""
    with ExporterProcess("--pid", str(os.getpid()), "--interval", "0.2", "--no-kernel-log") as ex:
        m0 = parse_metrics(ex.wait_for(samples_at_least(3)))
        s0 = m0["numatop_llm_samples_total"][0][1]
        assert m0["numatop_llm_late_samples_total"][0][1] == 0
        t0 = time.monotonic()
        os.kill(ex.pid, signal.SIGSTOP)
        try:
            time.sleep(2.0)
        finally:
            os.kill(ex.pid, signal.SIGCONT)
        time.sleep(0.6)
        m1 = parse_metrics(ex.scrape())
        awake = time.monotonic() - t0 - 2.0
    s1 = m1["numatop_llm_samples_total"][0][1]
    assert m1["numatop_llm_late_samples_total"][0][1] >= 1
    # about awake/0.2 samples after waking, not the ten deadlines missed while stopped
    assert 1 <= s1 - s0 <= awake / 0.2 + 3, (s0, s1, awake)
