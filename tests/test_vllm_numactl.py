"""vLLM 0.32 overrides a launcher's ``numactl --interleave`` in its workers — on a real engine (issue #17).

``vllm serve`` is started as ``numactl --interleave=0 vllm serve ...`` on this one-node machine
(interleave over one node is still MPOL_INTERLEAVE, and numa_maps says ``interleave:0``). The API
server and the engine core keep the launcher's policy; every worker calls
``init_cpu_memory_env([node])`` in ``CPUWorker.__init__`` and ends strictly bound (``bind:0``), with
``auto`` and with ``nobind`` alike. The planner's placement says the same for the same launch
(``plan --pid N --numactl=--interleave=0``): policy ``bind:0``, overridden by vLLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from numatop_llm.probes.numa_maps import parse_numa_maps

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parent.parent


def _policies(pid: int) -> dict[str, int]:
    """Resident bytes per numa_maps policy word of a process."""
    return parse_numa_maps(Path(f"/proc/{pid}/numa_maps").read_bytes()).policy_bytes


@pytest.mark.parametrize("bind", ["auto", "nobind"])
def test_workers_rebind_under_a_launchers_numactl_interleave(vllm_engine_factory, bind):
    eng = vllm_engine_factory(tp=1, bind=bind, kv_gib=1, prefix=["numactl", "--interleave=0"])
    cmds = eng.cmdlines()
    (worker,) = eng.worker_pids().values()
    (core,) = [p for p, c in cmds.items() if c and c[0].startswith("VLLM::EngineCore")]

    api = _policies(eng.pid)
    assert set(api) == {"interleave:0"}, api  # the launcher's policy, untouched
    assert set(_policies(core)) == {"interleave:0"}
    w = _policies(worker)
    # vLLM's own strict bind replaced it in the worker, for every mapping without a policy of its own
    assert "bind:0" in w and not any(k.startswith("interleave") for k in w), w
    assert w["bind:0"] >= 2**30  # the 1 GiB KV cache among them

    r = subprocess.run(
        [sys.executable, "-m", "numatop_llm", "plan", "--pid", str(eng.pid), "--numactl=--interleave=0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    (rank,) = out["placement"]["ranks"]
    assert rank["policy"] == "bind:0" and rank["overridden_by_vllm"] is True
    assert any("overrides numactl interleave:0" in f for f in out["findings"])
    if bind != "auto":
        return
    # a BIOS what-if is not relaunched: the plan and the steps are printed and saved, the engine keeps running;
    # after the "reboot" (here: the same one-node machine) --check-machine confirms the machine and the plan
    r = _cli("relaunch", "--pid", str(eng.pid), "--nodes-per-socket", "1", "--json")
    assert r.returncode in (0, 1), r.stderr
    assert "is a BIOS change: nothing was stopped or started" in r.stderr
    saved = next(w for w in r.stderr.split() if w.endswith(".json") and "machine-whatif-" in w)
    assert eng.alive
    r = _cli("plan", "--pid", str(eng.pid), "--check-machine", saved, "--json")
    check = json.loads(r.stdout)["machine_check"]
    assert check["matches"] is True and check["differences"] == []
    assert r.returncode == (0 if json.loads(r.stdout)["verdict"] == "fits" else 1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "numatop_llm", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )
