"""``numatop-llm relaunch`` (restart an engine with a new plan, roll back on failure) and ``history``."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from types import SimpleNamespace
from typing import Any

#: how often (seconds) a running step's countdown is printed in text mode
COUNTDOWN_EVERY = 5.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "relaunch",
        help="restart a vLLM engine with a new plan (drain, stop, start, verify, roll back on failure)",
        description=(
            "Capture the running `vllm serve` engine (argv, interpreter, cwd, user, environment, cgroups), "
            "change only what the plan changes, show the diff and the planner's verdict, then drain "
            "(wait for vllm:num_requests_running/_waiting to reach 0), stop (SIGTERM, SIGKILL after a "
            "timeout), clean up /dev/shm, start the new command and verify /health and one completion. "
            "If the new engine fails, the old command is started again and verified. "
            "Exit 0 relaunched, 1 refused/failed/rolled back, 2 bad input."
        ),
    )
    p.add_argument("--pid", type=int, required=True, help="any process of the engine's tree")
    p.add_argument("--tp", type=int, metavar="N", help="--tensor-parallel-size")
    p.add_argument("--pp", type=int, metavar="N", help="--pipeline-parallel-size")
    p.add_argument("--bind", metavar="SPEC", help="VLLM_CPU_OMP_THREADS_BIND: auto, nobind or CPU lists like 0-3|4-7")
    p.add_argument("--kv-gib", type=float, metavar="X", help="VLLM_CPU_KVCACHE_SPACE (GiB per worker)")
    p.add_argument("--reserved-cpus", type=int, metavar="N", help="VLLM_CPU_NUM_OF_RESERVED_CPU")
    p.add_argument("--numactl", metavar="ARGS", help="start under numactl with these options ('' drops a prefix)")
    p.add_argument(
        "--nodes-per-socket", type=int, metavar="N", help="BIOS what-if (SNC/NPS): print the plan and the steps"
    )
    p.add_argument("--interleave", metavar="NODES", help="BIOS interleave what-if: print the plan and the steps")
    p.add_argument(
        "--visible-memory-nodes", metavar="LIST", help="set CPU_VISIBLE_MEMORY_NODES (e.g. 4,5; '' unsets it)"
    )
    p.add_argument("--dry-run", action="store_true", help="show the diff and the verdict; change nothing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="relaunch even when the planner predicts oom/error")
    p.add_argument("--no-drain", action="store_true", help="stop without waiting for requests in flight")
    p.add_argument("--json", action="store_true", help="print one JSON document at the end")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="S", help="default 60")
    p.add_argument("--stop-timeout", type=float, default=30.0, metavar="S", help="SIGKILL after this (default 30)")
    p.add_argument("--start-timeout", type=float, default=300.0, metavar="S", help="until /health (default 300)")
    p.add_argument("--verify-timeout", type=float, default=180.0, metavar="S", help="first completion (default 180)")
    p.set_defaults(func=run_relaunch)

    h = sub.add_parser("history", help="list past relaunches from the journal")
    h.add_argument("--json", action="store_true")
    h.add_argument("--limit", type=int, default=20, metavar="N", help="the last N relaunches (default 20; 0 = all)")
    h.set_defaults(func=run_history)


# -- input checks --------------------------------------------------------------------------------
def _check_args(args: argparse.Namespace) -> list[str] | None:
    from numatop_llm.commands.common import UsageError
    from numatop_llm.probes.cpulist import parse_cpulist

    for name in ("tp", "pp"):
        v = getattr(args, name)
        if v is not None and not 1 <= v <= 4096:
            raise UsageError(f"--{name} must be between 1 and 4096, got {v}")
    if args.kv_gib is not None and not 0 < args.kv_gib < 1 << 20:
        raise UsageError(f"--kv-gib must be a positive number of GiB, got {args.kv_gib:g}")
    if args.reserved_cpus is not None and args.reserved_cpus < 0:
        raise UsageError(f"--reserved-cpus must be 0 or more, got {args.reserved_cpus}")
    for name in ("drain_timeout", "stop_timeout", "start_timeout", "verify_timeout"):
        v = getattr(args, name)
        if not 0 < v <= 86400:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 86400 seconds, got {v:g}")
    if args.bind is not None and args.bind not in ("auto", "nobind"):
        parts = args.bind.split("|")
        for part in parts:
            try:
                if not part.strip() or not parse_cpulist(part):
                    raise ValueError
            except ValueError:
                raise UsageError(
                    f"--bind {args.bind!r}: expected auto, nobind or CPU lists separated by | (e.g. 0-3|4-7)"
                ) from None
    numactl = None
    if args.numactl is not None:
        try:
            numactl = shlex.split(args.numactl)
        except ValueError as exc:
            raise UsageError(f"--numactl: {exc}") from None
        if numactl and shutil.which("numactl") is None:
            raise UsageError("--numactl given but numactl is not installed")
    return numactl


# -- the plan ------------------------------------------------------------------------------------
def _override(config: Any, changes: dict[str, Any]) -> Any:
    import dataclasses

    if hasattr(config, "model_copy"):
        return config.model_copy(update=changes)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.replace(config, **changes)
    for k, v in changes.items():
        setattr(config, k, v)
    return config


def make_plan_for(old, changes: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """(config for with_plan, plan or None, planner problem or None). Never raises."""
    try:
        from numatop_llm.planner import config_from_engine, load_model, make_plan
        from numatop_llm.probes.roots import SysRoots
        from numatop_llm.probes.snapshot import SnapshotReader

        snap = SnapshotReader(SysRoots(), old.pid).read()
        engine_cfg = snap.engine.config if snap.engine is not None else old.config
        config = _override(config_from_engine(engine_cfg), changes)
    except Exception as exc:
        return SimpleNamespace(**changes), None, f"planner unavailable: {_one_line(exc)}"
    try:
        model = load_model(old.model)
        plan = make_plan(model, snap.topology, config, engine=snap.engine)
    except Exception as exc:
        return config, None, f"planner failed: {_one_line(exc)}"
    return config, plan, None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _verdict_lines(plan: Any, plan_error: str | None) -> list[str]:
    if plan is None:
        return [plan_error or "no plan"]
    out = [f"planner verdict: {getattr(plan, 'verdict', '?')}"]
    for e in list(getattr(plan, "errors", None) or [])[:3]:
        out.append(f"  error: {e}")
    for f in list(getattr(plan, "findings", None) or [])[:5]:
        out.append(f"  {getattr(f, 'message', f)}")
    return out


def _refusal(plan: Any, plan_error: str | None, force: bool) -> str | None:
    from numatop_llm.launcher import BLOCKING_VERDICTS

    if force:
        return None
    if plan is None and plan_error:
        return f"{plan_error}; use --force to relaunch without a plan check"
    verdict = getattr(plan, "verdict", None)
    if verdict in BLOCKING_VERDICTS:
        return f"the planner's verdict is {verdict}; use --force to relaunch anyway"
    return None


# -- relaunch ------------------------------------------------------------------------------------
def run_relaunch(args: argparse.Namespace) -> int:
    from numatop_llm.commands.common import EXIT_FAIL, EXIT_OK, UsageError
    from numatop_llm.launcher import CaptureError, Relaunch, capture, diff

    numactl = _check_args(args)
    if args.nodes_per_socket is not None or args.interleave:  # a BIOS change: software cannot apply it (#17)
        from numatop_llm.commands.plan import bios_relaunch

        return bios_relaunch(args)
    try:
        old = capture(args.pid)
    except CaptureError as exc:
        raise UsageError(str(exc)) from None
    interactive = sys.stdin.isatty()
    if not args.dry_run and not args.yes and not interactive:
        raise UsageError("refusing to relaunch without --yes: stdin is not a terminal (--dry-run only shows the plan)")
    changes = {
        k: v
        for k, v in (
            ("tp", args.tp),
            ("pp", args.pp),
            ("bind", args.bind),
            ("kv_gib", args.kv_gib),
            ("reserved_cpus", args.reserved_cpus),
        )
        if v is not None
    }
    config, plan, plan_error = make_plan_for(old, changes)
    new = old.with_plan(config, numactl_prefix=numactl)
    if args.visible_memory_nodes is not None:  # issue #17: vLLM binds workers only to these nodes
        new = new.with_changes(env={"CPU_VISIBLE_MEMORY_NODES": args.visible_memory_nodes or None})
    lines = diff(old, new)
    refusal = _refusal(plan, plan_error, args.force)
    out = sys.stdout
    if not args.json:
        print(f"engine pid {old.pid}: {old.masked_command()}", file=out)
        for note in old.notes:
            print(f"note: {note}", file=out)
        print("\n".join(lines) if lines else "no change: the engine would restart with the same command", file=out)
        print("\n".join(_verdict_lines(plan, plan_error)), file=out)
    if args.dry_run:
        if args.json:
            _dump(
                {
                    "dry_run": True,
                    "old": old.summary(),
                    "new": new.summary(),
                    "diff": lines,
                    "verdict": getattr(plan, "verdict", None),
                    "plan_error": plan_error,
                    "refused": refusal,
                    "notes": list(old.notes),
                }
            )
        else:
            print(f"dry run: nothing changed{f' (would refuse: {refusal})' if refusal else ''}", file=out)
        return EXIT_FAIL if refusal else EXIT_OK
    if refusal:
        if args.json:
            _dump({"ok": False, "refused": refusal, "diff": lines, "verdict": getattr(plan, "verdict", None)})
        else:
            print(f"refused: {refusal}", file=sys.stderr)
        return EXIT_FAIL
    if not args.yes:
        try:
            answer = input(f"Relaunch engine pid {old.pid} now? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not relaunched", file=sys.stderr)
            return EXIT_FAIL
    printer = _StepPrinter(enabled=not args.json)
    relaunch = Relaunch(
        old,
        new,
        drain_timeout=args.drain_timeout,
        stop_timeout=args.stop_timeout,
        start_timeout=args.start_timeout,
        verify_timeout=args.verify_timeout,
        no_drain=args.no_drain,
        on_step=printer,
        plan=plan,
        plan_error=plan_error,
        force=args.force,
    )
    with _Interrupts(relaunch, printer):
        outcome = relaunch.run()
    if args.json:
        doc = outcome.to_json() | {"diff": lines, "verdict": getattr(plan, "verdict", None), "old_pid": old.pid}
        doc["journal"] = str(relaunch.journal.path)
        _dump(doc)
    else:
        print(outcome.message)
        for e in outcome.explanations:
            print(f"why: {e}")
        if not outcome.ok and outcome.log_tail:
            print(f"--- the new engine's log ({outcome.log_path}), last lines ---")
            print(outcome.log_tail)
        for p in relaunch.journal.problems:
            print(f"note: {p}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_FAIL


def _dump(doc: dict) -> None:
    json.dump(doc, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class _StepPrinter:
    """Prints each finished step as one line, and a running step's countdown every few seconds."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.current = ""
        self._last: dict[str, float] = {}

    def __call__(self, step) -> None:
        from numatop_llm.launcher import StepStatus

        self.current = step.name
        if not self.enabled:
            return
        if step.status == StepStatus.RUNNING:
            if step.countdown is None:
                return
            now = time.monotonic()
            if now - self._last.get(step.name, now - COUNTDOWN_EVERY - 1) < COUNTDOWN_EVERY:
                return
            self._last[step.name] = now
            print(f"  [ .. ] {step.name:<16} {step.message} ({step.countdown:.0f} s left)", flush=True)
            return
        mark = {StepStatus.OK: " ok ", StepStatus.FAILED: "FAIL", StepStatus.SKIPPED: "skip"}.get(
            step.status, step.status
        )
        print(f"  [{mark}] {step.name:<16} {step.seconds:6.1f} s  {step.message}", flush=True)


class _Interrupts:
    """Ctrl-C while draining cancels (nothing changed); later it is refused: the engine is mid-restart."""

    def __init__(self, relaunch, printer: _StepPrinter) -> None:
        self.relaunch, self.printer = relaunch, printer
        self.previous = None

    def _handler(self, signum, frame) -> None:
        if self.printer.current in ("", "capture", "plan", "drain"):
            self.relaunch.cancel()
            print("  cancelling (nothing has changed yet)", file=sys.stderr, flush=True)
        else:
            print("  cannot interrupt now: the engine is being restarted; wait for the outcome", file=sys.stderr)

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# -- history -------------------------------------------------------------------------------------
def run_history(args: argparse.Namespace) -> int:
    from numatop_llm.commands.common import EXIT_OK, UsageError
    from numatop_llm.launcher import read_history

    if args.limit < 0:
        raise UsageError(f"--limit must be 0 or more, got {args.limit}")
    records, problems = read_history()
    if args.limit:
        records = records[-args.limit :]
    if args.json:
        _dump({"relaunches": [r.to_json() for r in records], "problems": problems})
        return EXIT_OK
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    if not records:
        print("no relaunch in the journal yet")
        return EXIT_OK
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        took = f"{r.seconds:.1f} s" if r.seconds is not None else "-"
        new = r.new_pid if r.new_pid is not None else "-"
        changes = [c.strip() for c in r.changes if not c.startswith(("-", "+"))]
        print(f"{when}  {r.run}  pid {r.old_pid} → {new}  {r.status:<11} {took:>8}  {'; '.join(changes) or '-'}")
        if r.ok is False and r.message:
            print(f"    {r.message}")
    return EXIT_OK
