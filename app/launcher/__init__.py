"""Relaunch a running vLLM CPU engine with a chosen plan: capture, diff, drain, stop, start, verify, roll back.

The API the TUI and ``numatop-llm relaunch`` use::

    old = capture(pid)                              # LaunchSpec of the running `vllm serve`
    new = old.with_plan(plan_config, numactl_prefix=None)
    print("\\n".join(diff(old, new)))               # masked
    outcome = Relaunch(old, new, drain_timeout=60, stop_timeout=30, start_timeout=300,
                       on_step=show).run()         # Outcome(ok, rolled_back, new_pid, steps, message, log_tail)

Never imports Textual: ``on_step`` is a plain callback (called from the thread running ``run``).
"""

from __future__ import annotations

from numatop_llm.launcher.diff import diff
from numatop_llm.launcher.journal import Journal, RelaunchRecord, read_history
from numatop_llm.launcher.relaunch import Relaunch
from numatop_llm.launcher.spec import CaptureError, LaunchSpec, capture
from numatop_llm.launcher.steps import BLOCKING_VERDICTS, FAILED, OK, RUNNING, SKIPPED, Outcome, Step, StepStatus
from numatop_llm.launcher.system import LiveSystem, ProcRef, System

__all__ = [
    "BLOCKING_VERDICTS",
    "FAILED",
    "OK",
    "RUNNING",
    "SKIPPED",
    "CaptureError",
    "Journal",
    "LaunchSpec",
    "LiveSystem",
    "Outcome",
    "ProcRef",
    "Relaunch",
    "RelaunchRecord",
    "Step",
    "StepStatus",
    "System",
    "capture",
    "diff",
    "read_history",
]
