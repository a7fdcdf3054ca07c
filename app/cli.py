"""The ``numatop-llm`` command: one entry point, subcommands sharing one app factory.

Heavy imports (Textual, the planner) happen inside the subcommand that needs them, so
``numatop-llm snapshot`` starts fast and never imports Textual.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _roots(args: argparse.Namespace):
    from probes.roots import SysRoots

    roots = SysRoots.at(getattr(args, "proc", None), getattr(args, "sys", None))
    if not (roots.sys / "devices" / "system" / "cpu").is_dir():
        raise UsageError(f"{roots.sys} is not a sysfs tree (no devices/system/cpu)")
    if not roots.proc.is_dir():
        raise UsageError(f"{roots.proc} is not a directory")
    return roots


def _check_pid(roots, pid: int | None) -> None:
    if pid is None:
        return
    if pid <= 0 or not (roots.proc / str(pid)).is_dir():
        raise UsageError(f"no such process: {pid}")


def cmd_snapshot(args: argparse.Namespace) -> int:
    from app.report import snapshot_json, snapshot_text
    from probes.engine import discover_engines
    from probes.snapshot import SnapshotReader

    roots = _roots(args)
    _check_pid(roots, args.pid)
    pid = args.pid
    if pid is None and args.discover:
        found = discover_engines(roots)
        pid = found[0].root_pid if found else None
    snap = SnapshotReader(roots, pid).read()
    if args.json:
        json.dump(snapshot_json(snap), sys.stdout, indent=None if args.compact else 2)
        sys.stdout.write("\n")
    else:
        print(snapshot_text(snap))
    return EXIT_OK


def cmd_discover(args: argparse.Namespace) -> int:
    from probes.engine import discover_engines

    roots = _roots(args)
    found = discover_engines(roots)
    if args.json:
        print(json.dumps([c.__dict__ | {"cmdline": list(c.cmdline)} for c in found]))
        return EXIT_OK
    if not found:
        print("no running vLLM engine found")
        return EXIT_FAIL
    for c in found:
        print(f"{c.root_pid:>8}  {c.workers} worker(s)  {c.processes} processes  {c.model or '?'}")
    return EXIT_OK


def _add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proc", metavar="DIR", help="procfs root (default /proc)")
    p.add_argument("--sys", metavar="DIR", help="sysfs root (default /sys)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="numatop-llm",
        description="NUMA dashboard, what-if planner and safe relauncher for vLLM CPU engines.",
    )
    from app import __version__

    parser.add_argument("--version", action="version", version=f"numatop-llm {__version__}")
    parser.add_argument("--pid", type=int, help="attach to this process's engine tree")
    parser.add_argument("--demo", action="store_true", help="replay the bundled 8-node story")
    parser.add_argument("--record", metavar="FILE", help="record every sample as JSON lines (.gz compresses)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed of --demo (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh interval in seconds (default 1)")
    _add_roots(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("snapshot", help="print one snapshot of the topology (and an engine tree)")
    p.add_argument("--pid", type=int, help="include the engine tree this process belongs to")
    p.add_argument("--discover", action="store_true", help="attach to the first vLLM engine found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--compact", action="store_true", help="JSON on one line")
    _add_roots(p)
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("discover", help="list running vLLM engines")
    p.add_argument("--json", action="store_true")
    _add_roots(p)
    p.set_defaults(func=cmd_discover)

    for mod in _command_modules():
        mod.register(sub)
    return parser


#: modules that add subcommands; each has ``register(subparsers)`` and imports its heavy
#: dependencies (Textual, the planner, prometheus-client) only inside its handlers
COMMAND_MODULES = ("app.cmd_tui", "app.cmd_plan", "app.cmd_relaunch", "app.cmd_explain", "app.cmd_export")


def _command_modules():
    import importlib

    out = []
    for modname in COMMAND_MODULES:
        try:
            out.append(importlib.import_module(modname))
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    try:
        if func is None:
            from app.cmd_tui import run_tui

            return run_tui(args)
        return int(func(args) or 0)
    except UsageError as exc:
        print(f"numatop-llm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


def entry() -> NoReturn:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    # under ``python -m app.cli`` this module is ``__main__``: run the imported ``app.cli`` so the
    # UsageError raised by command modules (which import ``app.cli``) is the one caught there
    from app.cli import main as _main

    sys.exit(_main())
