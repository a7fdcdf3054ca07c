"""``numatop-llm explain``: why did a process (or the last engine's worker) die with -9?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="explain an OOM kill (-9) from the kernel log")
    p.add_argument("--pid", type=int, help="a PID of the dead engine (default: the last engine seen)")
    p.add_argument("--kernel-log", metavar="FILE", help="read this dmesg/kmsg text instead of /dev/kmsg")
    p.add_argument("--all", action="store_true", help="every OOM kill in the kernel log")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from numatop_llm.commands.common import UsageError
    from numatop_llm.postmortem import explain_kill, relevant_kills
    from numatop_llm.probes.kernel_log import boot_time, parse_oom_reports, read_kernel_log
    from numatop_llm.statedir import last_engine

    problems: list[str] = []
    if args.kernel_log:
        try:
            text = Path(args.kernel_log).read_text(errors="replace")
        except OSError as exc:
            raise UsageError(f"cannot read {args.kernel_log}: {exc.strerror}") from None
    else:
        text, problems = read_kernel_log()
    kills = parse_oom_reports(text)
    engine = last_engine()
    pids: set[int] | None = None
    if args.pid is not None:
        pids = {args.pid}
        if engine and args.pid in {p["pid"] for p in engine.get("processes", [])}:
            pids = {p["pid"] for p in engine["processes"]}
        else:
            engine = None
    elif not args.all and engine:
        pids = {p["pid"] for p in engine.get("processes", [])}
    found = relevant_kills(kills, pids)
    btime = None if args.kernel_log else boot_time()
    nodes_now = None if args.kernel_log else _nodes_now()
    out = [explain_kill(k, engine, btime, nodes_now) for k in found]
    if args.json:
        json.dump(
            {"explanations": [e.model_dump(mode="json") for e in out], "degraded": problems}, sys.stdout, indent=2
        )
        print()
    else:
        for p in problems:
            print(f"note: {p}", file=sys.stderr)
        if not out:
            scope = f"pid {args.pid}" if args.pid else ("the last engine seen" if pids else "this boot")
            print(f"no OOM kill found for {scope} in the kernel log")
        for e in out:
            print(e.text)
    return 0 if out else 1


def _nodes_now() -> dict[str, dict[str, int]]:
    """This machine's node sizes now (a killed process's node outlives it); empty when unreadable."""
    from numatop_llm.probes.roots import SysRoots
    from numatop_llm.probes.topology import read_topology

    try:
        topo = read_topology(SysRoots())
    except Exception:  # best effort: the explanation stands without the node's size
        return {}
    return {str(n.id): {"total_bytes": n.total_bytes} for n in topo.nodes if n.memory is not None}
