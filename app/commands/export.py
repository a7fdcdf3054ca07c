"""``numatop-llm export``: serve per-node and per-rank NUMA metrics to Prometheus, headless."""

from __future__ import annotations

import argparse

DEFAULT_LISTEN = "127.0.0.1:9464"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="serve NUMA metrics for Prometheus (headless, until SIGTERM)",
        description=(
            "Serve per-node and per-rank NUMA metrics in the Prometheus text format at /metrics. "
            "Samples in the background every --interval seconds; without --pid it discovers a vLLM "
            "engine and discovers again when the engine goes away. Runs until SIGTERM or SIGINT."
        ),
    )
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}: this machine only; port 0 picks a free port)",
    )
    p.add_argument("--pid", type=int, help="follow this process's engine tree (default: discover vLLM)")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between samples (default 5)")
    p.add_argument("--no-kernel-log", action="store_true", help="do not read the kernel log for OOM kills")
    p.add_argument("--proc", metavar="DIR", help="procfs root (default /proc)")
    p.add_argument("--sys", metavar="DIR", help="sysfs root (default /sys)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading
    from pathlib import Path

    from numatop_llm.commands.common import UsageError, check_pid, roots_from
    from numatop_llm.exporter import Exporter, ListenError, is_loopback, parse_listen, serve

    if not args.interval > 0 or args.interval > 3600:
        raise UsageError(f"--interval must be between 0 and 3600 seconds, got {args.interval:g}")
    try:
        host, port = parse_listen(args.listen)
    except ListenError as exc:
        raise UsageError(str(exc)) from None
    roots = roots_from(args)
    check_pid(roots, args.pid)

    exporter = Exporter(
        roots,
        pid=args.pid,
        interval=args.interval,
        kernel_log=None if args.no_kernel_log else Path("/dev/kmsg"),
    )
    try:
        server, _thread, bound = serve(exporter.registry, host, port)
    except ListenError as exc:
        exporter.stop()
        raise UsageError(str(exc)) from None

    stop = threading.Event()
    got: list[int] = []

    def _on_signal(signum: int, _frame: object) -> None:
        got.append(signum)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        exporter.sample_once()  # the first scrape already sees the machine (and the engine)
        shown = f"[{host}]" if ":" in host else host
        target = f"pid {args.pid}" if args.pid is not None else "discovering vLLM engines"
        print(f"numatop-llm export: serving http://{shown}:{bound}/metrics ({target}, every {args.interval:g} s)",
              flush=True)  # fmt: skip
        if not is_loopback(host):
            print(f"numatop-llm export: note: listening on {host}, reachable from the network", file=sys.stderr)
        exporter.start(first_in=args.interval)
        while not stop.wait(1.0):
            pass
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()
        for s, h in previous.items():
            signal.signal(s, h)
    name = signal.Signals(got[0]).name if got else "stop"
    print(f"numatop-llm export: stopped ({name})", file=sys.stderr, flush=True)
    return 0
