"""``numatop-llm plan``: predict whether a vLLM CPU configuration fits, per rank and node; ``--solve`` ranks them.

Exit status: 0 when the configuration fits (with ``--solve``: when some candidate fits), 1 when it
does not (OOM kill, spill, or an error vLLM would raise), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_LIST = r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*"
_BIND = re.compile(rf"^(?:auto|nobind|all|{_LIST}(?:\|{_LIST})*)$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="what-if: will this TP/PP/bind/KV configuration fit each NUMA node? (--solve ranks them)",
        description="Predict per rank what vLLM CPU puts on each NUMA node and whether the node holds it.",
    )
    p.add_argument("--model", metavar="DIR", help="model directory (config.json, *.safetensors headers)")
    p.add_argument(
        "--demo", action="store_true", help="the bundled seed story: DeepSeek-R1-Distill-Qwen-32B on 8 nodes"
    )
    p.add_argument(
        "--topology",
        metavar="live|DIR|demo",
        help="machine to plan for: live (default), demo (seed box), or a sysfs fixture dir with sys/ and proc/",
    )
    p.add_argument("--pid", type=int, help="take the model and configuration from this running vLLM engine")
    p.add_argument("--tp", type=int, help="--tensor-parallel-size (default 1)")
    p.add_argument("--pp", type=int, help="--pipeline-parallel-size (default 1)")
    p.add_argument("--bind", metavar="SPEC", help="VLLM_CPU_OMP_THREADS_BIND: auto, nobind or lists like 0-14|15-29")
    p.add_argument("--kv-gib", type=float, metavar="X", help="VLLM_CPU_KVCACHE_SPACE per rank (GiB; default unset)")
    p.add_argument("--reserved-cpus", type=int, metavar="N", help="VLLM_CPU_NUM_OF_RESERVED_CPU")
    p.add_argument("--max-model-len", type=int, metavar="N")
    p.add_argument("--max-num-seqs", type=int, metavar="N")
    p.add_argument("--dtype", help="--dtype (default auto)")
    p.add_argument("--gpu-memory-utilization", type=float, metavar="F", help="default 0.92")
    p.add_argument("--vllm-version", metavar="V", help="model this vLLM release's rules (default 0.32.0)")
    machine = p.add_argument_group("machine what-ifs (issue #17)")
    machine.add_argument(
        "--nodes-per-socket", type=int, metavar="N", help="plan for the machine with N NUMA nodes per socket (SNC/NPS)"
    )
    machine.add_argument(
        "--interleave", metavar="NODES", help="BIOS-interleave these nodes into one (0-3, or sets 0-3|4-7)"
    )
    machine.add_argument("--numactl", metavar="ARGS", help="launch under numactl with these options, as relaunch does")
    machine.add_argument(
        "--visible-memory-nodes", metavar="LIST", help="CPU_VISIBLE_MEMORY_NODES for the engine (e.g. 4,5)"
    )
    machine.add_argument("--save-machine", metavar="FILE", help="write the what-if machine and plan to FILE")
    machine.add_argument(
        "--check-machine",
        metavar="FILE",
        help="after a BIOS change: does this machine match FILE (from --save-machine), and does the plan fit?",
    )
    p.add_argument("--solve", action="store_true", help="rank every valid configuration for this machine")
    p.add_argument("--limit", type=int, default=10, help="candidates to show with --solve (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--proc", metavar="DIR", help="procfs root for --pid (default /proc)")
    p.add_argument("--sys", metavar="DIR", help="sysfs root for the live topology (default /sys)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from numatop_llm.commands.common import UsageError

    for name in ("tp", "pp", "max_model_len", "max_num_seqs", "limit"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be ≥ 1 (got {v})")
    if args.reserved_cpus is not None and args.reserved_cpus < 0:
        raise UsageError(f"--reserved-cpus must be ≥ 0 (got {args.reserved_cpus})")
    if args.kv_gib is not None and not args.kv_gib >= 0:
        raise UsageError(f"--kv-gib must be ≥ 0 (got {args.kv_gib:g})")
    gmu = args.gpu_memory_utilization
    if gmu is not None and not 0 < gmu <= 1:
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1] (got {gmu:g})")
    if args.bind is not None and not _BIND.match(args.bind.strip()):
        raise UsageError(f"bad --bind {args.bind!r}: want auto, nobind, or CPU lists like 0-14|15-29")
    if not (args.model or args.demo or args.pid is not None):
        raise UsageError("plan needs --model DIR, --demo, or --pid N")


def _topology(args: argparse.Namespace):
    from numatop_llm.commands.common import UsageError
    from numatop_llm.probes.roots import SysRoots
    from numatop_llm.probes.topology import read_topology

    which = args.topology or ("demo" if args.demo and args.pid is None else "live")
    if which == "demo":
        return demo_topology()
    if which == "live":
        roots = SysRoots.at(args.proc, args.sys)
    else:
        d = Path(which)
        if not (d / "sys" / "devices" / "system" / "cpu").is_dir():
            raise UsageError(f"--topology {which}: not a sysfs fixture (want {d}/sys/devices/system/cpu)")
        roots = SysRoots(proc=d / "proc", sys=d / "sys")
    topo = read_topology(roots)
    if not topo.nodes:
        raise UsageError(f"no NUMA node readable under {roots.sys}")
    return topo


def demo_topology():
    """The seed box as the topology reader sees it, cached as JSON under ~/.cache/numatop-llm.

    Writing the seed box's sysfs tree takes most of a second (a thousand small files); the reading
    is cached, keyed by the generator's source, so a changed generator is never served stale.
    """
    import hashlib
    import os
    import tempfile

    import numatop_llm.demo.seedbox as seedbox
    from numatop_llm.probes.models import Topology
    from numatop_llm.probes.topology import read_topology

    try:
        key = hashlib.sha256(Path(seedbox.__file__).read_bytes()).hexdigest()[:16]
    except OSError:
        key = None
    cache_root = Path(os.environ.get("NUMATOP_CACHE") or Path.home() / ".cache" / "numatop-llm")
    cached = cache_root / f"seedbox-topology-{key}.json" if key else None
    if cached is not None:
        try:
            return Topology.model_validate_json(cached.read_text())
        except (OSError, ValueError):
            pass
    with tempfile.TemporaryDirectory(prefix="numatop-seedbox-") as tmp:  # read, then leave nothing behind
        topo = read_topology(seedbox.write_seed_sysfs(Path(tmp)))
    if cached is not None:
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            part = cached.with_suffix(f".{os.getpid()}.tmp")
            part.write_text(topo.model_dump_json())
            part.replace(cached)
        except OSError:
            pass
    return topo


def _engine(args: argparse.Namespace):
    from numatop_llm.commands.common import UsageError
    from numatop_llm.probes.engine import NoSuchProcess
    from numatop_llm.probes.roots import SysRoots
    from numatop_llm.probes.snapshot import SnapshotReader

    roots = SysRoots.at(args.proc, args.sys)
    if args.pid <= 0 or not (roots.proc / str(args.pid)).is_dir():
        raise UsageError(f"no such process: {args.pid}")
    try:
        snap = SnapshotReader(roots, args.pid).read()
    except NoSuchProcess:
        raise UsageError(f"no such process: {args.pid}") from None
    if snap.engine is None or not snap.engine.is_vllm:
        raise UsageError(f"process {args.pid} is not part of a vLLM engine")
    return snap.engine


def run(args: argparse.Namespace) -> int:
    from numatop_llm.commands.common import UsageError
    from numatop_llm.planner import ModelError, PlanConfig, config_from_engine, load_model, make_plan, seed_model, solve

    _check_args(args)
    engine = _engine(args) if args.pid is not None else None
    try:
        if args.model:
            model = load_model(args.model)
        elif engine is not None:
            from numatop_llm.monitor.planbridge import model_path

            path = model_path(engine)
            if path is None:
                raise UsageError(f"engine {engine.root_pid}: its model path is unknown (give --model DIR)")
            model = load_model(path)
        else:
            model = seed_model()
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    topology = _topology(args)

    base = config_from_engine(engine.config) if engine is not None else PlanConfig()
    updates = {}
    for attr, name in (
        ("tp", "tp"),
        ("pp", "pp"),
        ("bind", "bind"),
        ("kv_gib", "kv_gib"),
        ("reserved_cpus", "reserved_cpus"),
        ("max_model_len", "max_model_len"),
        ("max_num_seqs", "max_num_seqs"),
        ("dtype", "dtype"),
        ("gpu_memory_utilization", "gpu_memory_utilization"),
        ("vllm_version", "vllm_version"),
    ):
        v = getattr(args, attr)
        if v is not None:
            updates[name] = v.strip() if isinstance(v, str) else v
    config = base.model_copy(update=updates)
    if getattr(args, "check_machine", None):
        return _check_machine(args, model, topology, updates, engine)
    if _machine_whatif(args):
        return _run_machine(args, model, topology, config, engine)
    plan = make_plan(model, topology, config, engine=engine)
    cands = solve(model, topology, config, limit=args.limit, engine=engine) if args.solve else None

    if args.json:
        out = plan.to_json()
        if cands is not None:
            out["candidates"] = [c.to_json() for c in cands]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        from numatop_llm.planner.render import print_candidates, print_plan

        console = Console(width=None if sys.stdout.isatty() else 160)
        print_plan(plan, console)
        if cands is not None:
            console.print()
            print_candidates(cands, args.model or (engine.config.model if engine else None) or model.name, console)
    if cands is not None:
        return 0 if any(c.plan.fits for c in cands) else 1
    return 0 if plan.fits else 1


def _machine_whatif(args: argparse.Namespace) -> bool:
    names = ("nodes_per_socket", "interleave", "numactl", "visible_memory_nodes")
    return any(getattr(args, a, None) is not None for a in names)


def _run_machine(args: argparse.Namespace, model, topology, config, engine) -> int:
    """``plan`` on a machine what-if (issue #17): same output, plus ``machine`` and ``placement``."""
    from numatop_llm.commands.common import UsageError
    from numatop_llm.planner import machineplan

    if args.nodes_per_socket is not None and args.nodes_per_socket < 1:
        raise UsageError(f"--nodes-per-socket must be ≥ 1 (got {args.nodes_per_socket})")
    try:
        what = machineplan.build(
            topology,
            nodes_per_socket=args.nodes_per_socket,
            interleave=args.interleave,
            numactl=args.numactl,
            visible_nodes=args.visible_memory_nodes,
        )
    except ValueError as exc:  # MachineError is a ValueError
        raise UsageError(str(exc)) from None
    plan, placement = machineplan.plan(model, what, config, engine=engine)
    ranked = machineplan.solve_ranked(model, what, config, args.limit, engine=engine) if args.solve else None
    if getattr(args, "save_machine", None):
        try:
            machineplan.save(Path(args.save_machine), what, config, plan, placement)
        except OSError as exc:
            raise UsageError(f"--save-machine {args.save_machine}: {exc.strerror or exc}") from None
    if args.json:
        out = plan.to_json()
        out["findings"] += list(placement.findings)
        out["machine"] = what.to_json()
        out["placement"] = placement.to_json()
        if ranked is not None:
            out["candidates"] = [machineplan.candidate_json(c, pl) for c, pl in ranked]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        from numatop_llm.planner.render import print_candidates, print_plan

        console = Console(width=None if sys.stdout.isatty() else 160)
        machineplan.print_machine(what, None, console)
        print_plan(plan, console)
        machineplan.print_machine_cost(placement, console)
        if ranked is not None:
            console.print()
            name = args.model or (engine.config.model if engine else None) or model.name
            print_candidates([c for c, _ in ranked], name, console)
    if ranked is not None:
        return 0 if any(c.plan.fits for c, _ in ranked) else 1
    return 0 if plan.fits else 1


def _check_machine(args: argparse.Namespace, model, topology, updates: dict, engine) -> int:
    """``plan --check-machine FILE``: the machine after the reboot against the saved what-if, and the plan on it."""
    from numatop_llm.commands.common import UsageError
    from numatop_llm.planner import machineplan, make_plan
    from numatop_llm.planner.machine import compare

    try:
        saved = machineplan.load(Path(args.check_machine))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--check-machine {args.check_machine}: {str(exc).splitlines()[0]}") from None
    expected, config = saved["topology"], saved["config"].model_copy(update=updates)
    diffs = compare(expected, topology)
    plan = make_plan(model, topology, config, engine=engine)
    if args.json:
        out = plan.to_json()
        out["machine_check"] = {"expected": saved["label"], "matches": not diffs, "differences": diffs}
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from rich.console import Console

        from numatop_llm.planner.render import print_plan

        console = Console(width=None if sys.stdout.isatty() else 160)
        if diffs:
            console.print(f"[bold red]✖ this machine is not the one planned[/] ({saved['label']}):")
            for d in diffs:
                console.print(f"  • {d}")
        else:
            console.print(f"[bold green]✓ this machine is the one planned[/]: {saved['label']}")
        print_plan(plan, console)
    return 0 if not diffs and plan.fits else 1


def bios_relaunch(args: argparse.Namespace) -> int:
    """``relaunch --pid N --nodes-per-socket K|--interleave SETS``: software cannot change the BIOS. Print the
    plan on the machine after the change, save it, and the steps to apply and check it after the reboot."""
    import shlex
    import time

    from numatop_llm.statedir import state_dir

    path = state_dir() / f"machine-whatif-{time.strftime('%Y%m%d-%H%M%S')}.json"
    plan_args = argparse.Namespace(
        model=None,
        demo=False,
        topology=None,
        pid=args.pid,
        tp=args.tp,
        pp=getattr(args, "pp", None),
        bind=args.bind,
        kv_gib=args.kv_gib,
        reserved_cpus=args.reserved_cpus,
        max_model_len=None,
        max_num_seqs=None,
        dtype=None,
        gpu_memory_utilization=None,
        vllm_version=None,
        solve=False,
        limit=10,
        json=args.json,
        proc=None,
        sys=None,
        nodes_per_socket=args.nodes_per_socket,
        interleave=args.interleave,
        numactl=args.numactl or None,
        visible_memory_nodes=getattr(args, "visible_memory_nodes", None),
        save_machine=str(path),
        check_machine=None,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    rc = run(plan_args)
    flags = []
    if args.nodes_per_socket is not None:
        flags.append(f"--nodes-per-socket {args.nodes_per_socket}")
    if args.interleave:
        flags.append(f"--interleave {shlex.quote(args.interleave)}")
    steps = [
        "",
        f"relaunch: {' '.join(flags)} is a BIOS change: nothing was stopped or started.",
        f"  1. saved the planned machine and configuration to {path}",
        "  2. stop the engine, change the BIOS setting above, reboot",
        "  3. start the engine with the configuration above (VLLM_CPU_* and flags as listed)",
        f"  4. check: numatop-llm plan --pid <new engine PID> --check-machine {path}",
    ]
    print("\n".join(steps), file=sys.stderr if args.json else sys.stdout)
    return rc
