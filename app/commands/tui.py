"""``numatop-llm`` (the dashboard) and ``numatop-llm replay FILE``."""

from __future__ import annotations

import argparse
import os
import sys

from numatop_llm.commands.common import EXIT_OK, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a recording made with --record")
    p.add_argument("file", help="a recording (JSON lines, optionally .gz)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1)")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=run_replay)


def _need_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()) and not os.environ.get("NUMATOP_LLM_FORCE_TUI"):
        raise UsageError("the dashboard needs a terminal; for text use: numatop-llm snapshot (or --json)")


def _check_interval(value: float) -> float:
    if not (0.1 <= value <= 3600):
        raise UsageError(f"--interval must be between 0.1 and 3600 seconds, not {value:g}")
    return value


def build_source(args: argparse.Namespace):
    """The source the dashboard starts on, and a note for the status line."""
    from numatop_llm.commands.common import check_pid, roots_from
    from numatop_llm.monitor.sources import LiveSource, demo_source

    if getattr(args, "demo", False):
        if args.speed <= 0:
            raise UsageError("--speed must be above 0")
        return demo_source(speed=args.speed), None
    roots = roots_from(args)
    check_pid(roots, args.pid)
    src = LiveSource(roots, args.pid)
    if args.pid is None and src.attached_pid is None and not (args.proc or args.sys):
        # nothing to watch: open the story instead, and say how to get back
        src.close()
        return demo_source(), "no vLLM engine found here: showing the bundled demo"
    return src, None


def run_tui(args: argparse.Namespace) -> int:
    interval = _check_interval(args.interval)
    recorder = None
    source, note = build_source(args)
    if args.record:
        from numatop_llm.recording import Recorder, RecordingError

        try:
            recorder = Recorder(args.record, source=getattr(source, "label", ""))
        except RecordingError as exc:
            raise UsageError(str(exc)) from None
    _need_terminal()
    from numatop_llm.dashboard.app import NumatopApp

    app = NumatopApp(source, interval=interval, recorder=recorder, first_note=note, offer_live=not source.live)
    app.run()
    if recorder is not None:
        print(f"recorded {recorder.count} samples to {args.record}")
    return EXIT_OK


def run_replay(args: argparse.Namespace) -> int:
    from numatop_llm.monitor.sources import ReplaySource
    from numatop_llm.recording import RecordingError

    try:
        source = ReplaySource.from_file(args.file, speed=args.speed)
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    if args.speed <= 0:
        raise UsageError("--speed must be above 0")
    _need_terminal()
    from numatop_llm.dashboard.app import NumatopApp

    NumatopApp(source, interval=_check_interval(args.interval)).run()
    return EXIT_OK
