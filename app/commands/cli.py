"""The ``numatop-llm`` command: one entry point, subcommands sharing one app factory.

Each subcommand lives in its own module of this package with ``register(subparsers)``; heavy
imports (Textual, the planner, prometheus-client) happen inside the handler that needs them, so
``numatop-llm snapshot`` starts fast and never imports Textual.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from numatop_llm import __version__
from numatop_llm.commands import explain, export, plan, relaunch, snapshot, tui
from numatop_llm.commands.common import EXIT_OK, EXIT_USAGE, Parser, UsageError, add_roots

#: the subcommand modules, in the order ``--help`` lists them
COMMANDS = (snapshot, tui, plan, relaunch, explain, export)


def build_parser() -> Parser:
    parser = Parser(
        prog="numatop-llm",
        description="NUMA dashboard, what-if planner and safe relauncher for vLLM CPU engines.",
    )
    parser.add_argument("--version", action="version", version=f"numatop-llm {__version__}")
    parser.add_argument("--pid", type=int, help="attach to this process's engine tree")
    parser.add_argument("--demo", action="store_true", help="replay the bundled 8-node story")
    parser.add_argument("--record", metavar="FILE", help="record every sample as JSON lines (.gz compresses)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed of --demo (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh interval in seconds (default 1)")
    add_roots(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for mod in COMMANDS:
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    try:
        if func is None:
            return tui.run_tui(args)
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
