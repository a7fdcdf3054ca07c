"""What software can apply from a machine what-if (issue #17): a numactl prefix and CPU_VISIBLE_MEMORY_NODES
reach the relaunch diff; a BIOS change is never relaunched."""

from __future__ import annotations

from numatop_llm.launcher.system import LiveSystem
from tests.test_launcher_fakes import free_port
from tests.test_relaunch_cli import cli, fake_vllm, state  # noqa: F401 - fixtures


def test_numactl_and_visible_nodes_reach_the_relaunch(fake_vllm, state):  # noqa: F811
    proc = fake_vllm.start(free_port())
    before = LiveSystem().tree(proc.pid)
    out = cli(
        state,
        "relaunch",
        "--pid",
        str(proc.pid),
        "--numactl=--interleave=0",
        "--visible-memory-nodes",
        "0",
        "--dry-run",
    )
    assert out.returncode in (0, 1), out.stderr
    text = out.stdout + out.stderr
    assert "numactl: (none) → --interleave=0" in text, text
    assert "env CPU_VISIBLE_MEMORY_NODES: (unset) → 0" in text, text
    assert "dry run: nothing changed" in text
    assert LiveSystem().tree(proc.pid) == before


def test_a_bios_change_is_not_relaunched(fake_vllm, state):  # noqa: F811
    proc = fake_vllm.start(free_port())
    before = LiveSystem().tree(proc.pid)
    out = cli(state, "relaunch", "--pid", str(proc.pid), "--nodes-per-socket", "1", "--yes")
    # the fake engine names no model the planner can read (exit 2) or the plan is printed (0/1); either way
    # nothing is stopped or started
    assert out.returncode in (0, 1, 2), out.stderr
    assert "Traceback" not in out.stderr
    assert LiveSystem().tree(proc.pid) == before and all(LiveSystem().alive(r) for r in before)
