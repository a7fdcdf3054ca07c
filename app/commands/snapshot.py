"""``numatop-llm snapshot`` and ``numatop-llm discover``: one reading, as text or JSON (no Textual)."""

from __future__ import annotations

import argparse
import json
import sys

from numatop_llm.commands.common import EXIT_FAIL, EXIT_OK, add_roots, check_pid, roots_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("snapshot", help="print one snapshot of the topology (and an engine tree)")
    p.add_argument("--pid", type=int, help="include the engine tree this process belongs to")
    p.add_argument("--discover", action="store_true", help="attach to the first vLLM engine found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--compact", action="store_true", help="JSON on one line")
    add_roots(p)
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("discover", help="list running vLLM engines")
    p.add_argument("--json", action="store_true")
    add_roots(p)
    p.set_defaults(func=cmd_discover)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from numatop_llm.probes.engine import discover_engines
    from numatop_llm.probes.snapshot import SnapshotReader
    from numatop_llm.report import snapshot_json, snapshot_text

    roots = roots_from(args)
    check_pid(roots, args.pid)
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
    from numatop_llm.probes.engine import discover_engines

    roots = roots_from(args)
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
