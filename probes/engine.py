"""Find vLLM engines and read a whole engine tree: processes, threads, numa_maps, cgroups."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from probes.cgroup import read_cgroup
from probes.models import Engine, EngineConfig, NumaMaps, Process, Role
from probes.numa_maps import read_numa_maps
from probes.process import (
    children_map,
    list_pids,
    read_basics,
    read_cmdline,
    read_environ,
    read_link,
    relevant_env,
    user_name,
)
from probes.roots import SysRoots
from probes.textio import Problems
from probes.threads import ThreadReader
from probes.vllm import SHELLS, classify, engine_config, vllm_version_near


class NoSuchProcess(LookupError):
    """The PID to attach to does not exist."""


@dataclass(frozen=True)
class EngineCandidate:
    """A vLLM engine found by discovery."""

    root_pid: int
    model: str | None
    processes: int
    workers: int
    cmdline: tuple[str, ...]


def _ppid_map(proc: Path, pids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for parent, kids in children_map(proc, pids).items():
        for k in kids:
            out[k] = parent
    return out


def find_root(roots: SysRoots, pid: int, ppids: dict[int, int] | None = None) -> int:
    """The root of the vLLM tree ``pid`` belongs to (the API server or the driving script).

    For a process that is not part of a vLLM tree, the process itself.
    """
    proc = roots.proc
    if ppids is None:
        ppids = _ppid_map(proc, list_pids(proc))
    chain = [pid]
    while (parent := ppids.get(chain[-1])) and parent > 1 and len(chain) < 64:
        chain.append(parent)
    best = None
    for p in chain:
        cmd = read_cmdline(proc, p) or ()
        info = classify(cmd)
        if info.role == Role.API_SERVER:
            best = p  # the outermost API server wins (keep climbing)
        elif info.role in (Role.ENGINE_CORE, Role.WORKER) and best is None:
            best = p
    if best is None:
        return pid
    if classify(read_cmdline(proc, best) or ()).role != Role.API_SERVER:
        # An engine driven by a Python script (``LLM(...)``): its parent is the root,
        # unless that parent is a shell or init.
        parent = ppids.get(best)
        while parent and parent > 1:
            pcmd = read_cmdline(proc, parent) or ()
            if classify(pcmd).role in (Role.ENGINE_CORE, Role.WORKER):
                best, parent = parent, ppids.get(parent)
                continue
            base = Path(pcmd[0]).name if pcmd else ""
            if base not in SHELLS and not base.startswith("-"):
                best = parent
            break
    return best


def discover_engines(roots: SysRoots) -> list[EngineCandidate]:
    """Every running vLLM engine on the machine, one entry per tree root."""
    proc = roots.proc
    pids = list_pids(proc)
    ppids = _ppid_map(proc, pids)
    kids: dict[int, list[int]] = {}
    for c, p in ppids.items():
        kids.setdefault(p, []).append(c)
    roots_found: dict[int, None] = {}
    cmds: dict[int, tuple[str, ...]] = {}
    for pid in pids:
        cmd = read_cmdline(proc, pid)
        if not cmd:
            continue
        cmds[pid] = cmd
        if classify(cmd).role != Role.OTHER:
            roots_found[find_root(roots, pid, ppids)] = None
    out = []
    for r in roots_found:
        tree = _descendants(r, kids)
        roles = [classify(cmds.get(p, ())).role for p in tree]
        cmd = cmds.get(r, ())
        out.append(
            EngineCandidate(
                root_pid=r,
                model=engine_config(cmd, None).model,
                processes=len(tree),
                workers=sum(1 for x in roles if x == Role.WORKER),
                cmdline=cmd,
            )
        )
    return sorted(out, key=lambda c: c.root_pid)


def _descendants(root: int, kids: dict[int, list[int]]) -> list[int]:
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(sorted(kids.get(p, []), reverse=True))
    return out


class EngineReader:
    """Reads one engine tree repeatedly; keeps thread descriptors and numa_maps results between reads.

    ``numa_maps_max_age`` bounds how stale a process's numa_maps may be; reading it is the costly
    part of a sample (page-table walk), so callers pass 0 to force a read and a larger age to reuse.
    """

    def __init__(self, roots: SysRoots, pid: int) -> None:
        self.roots = roots
        self.attach_pid = pid
        self.threads = ThreadReader(roots.proc)
        self._numa: dict[tuple[int, int], tuple[float, NumaMaps]] = {}
        self._config: tuple[int, int, EngineConfig] | None = None
        self.last_numa_maps_seconds = 0.0

    def close(self) -> None:
        self.threads.close()

    def _config_for(self, root: int, starttime: int, problems: Problems) -> EngineConfig:
        if self._config and self._config[:2] == (root, starttime):
            return self._config[2]
        proc = self.roots.proc
        argv = read_cmdline(proc, root) or ()
        env = read_environ(proc, root, problems)
        exe = read_link(proc, root, "exe", Problems())
        cfg = engine_config(argv, env, vllm_version_near(exe))
        self._config = (root, starttime, cfg)
        return cfg

    def read(self, cpu_node: dict[int, int], *, numa_maps_max_age: float = 0.0) -> Engine:
        """Read the whole tree the attach PID belongs to. Raises NoSuchProcess when it is gone."""
        proc = self.roots.proc
        if not (proc / str(self.attach_pid)).is_dir():
            raise NoSuchProcess(self.attach_pid)
        pids = list_pids(proc)
        ppids = _ppid_map(proc, pids)
        root = find_root(self.roots, self.attach_pid, ppids)
        kids: dict[int, list[int]] = {}
        for c, p in ppids.items():
            kids.setdefault(p, []).append(c)
        tree = _descendants(root, kids)
        now = time.monotonic()
        processes: list[Process] = []
        alive_tids: set[int] = set()
        numa_cost = 0.0
        root_start = 0
        is_vllm = False
        for pid in tree:
            problems = Problems()
            b = read_basics(proc, pid)
            if not b.alive:
                continue
            problems.extend(b.problems)
            if pid == root:
                root_start = b.starttime
            info = classify(b.cmdline, b.comm)
            is_vllm = is_vllm or info.role != Role.OTHER
            threads = self.threads.read(pid, cpu_node, problems)
            alive_tids.update(t.tid for t in threads)
            key = (pid, b.starttime)
            cached = self._numa.get(key)
            nm: NumaMaps | None
            if cached is not None and now - cached[0] <= numa_maps_max_age:
                nm = cached[1]
            else:
                nm = read_numa_maps(proc, pid, problems)
                if nm is not None:
                    self._numa[key] = (now, nm)
                    numa_cost += nm.read_seconds
                elif cached is not None:
                    nm = cached[1]
            cg = read_cgroup(self.roots, pid, Problems())
            node_bytes = dict(nm.node_bytes) if nm else {}
            env: dict[str, str] = {}
            if info.role in (Role.API_SERVER, Role.WORKER) or pid == root:
                raw = read_environ(proc, pid, Problems())
                env = relevant_env(raw) if raw else {}
            processes.append(
                Process(
                    pid=pid,
                    ppid=b.ppid,
                    comm=b.comm,
                    cmdline=tuple(b.cmdline),
                    role=info.role,
                    tp_rank=info.tp_rank,
                    pp_rank=info.pp_rank,
                    label=info.label,
                    exe=read_link(proc, pid, "exe", Problems()),
                    cwd=read_link(proc, pid, "cwd", Problems()),
                    uid=b.uid,
                    user=user_name(b.uid),
                    starttime=b.starttime,
                    rss_bytes=b.rss_bytes,
                    node_bytes=node_bytes,
                    numa_maps=nm,
                    policy=nm.policy if nm else Process.model_fields["policy"].default,
                    cpus_allowed=b.cpus_allowed,
                    mems_allowed=b.mems_allowed,
                    threads=tuple(threads),
                    env=env,
                    cgroup=cg,
                    degraded=tuple(problems.items),
                )
            )
        self.threads.forget_missing(alive_tids)
        live_keys = {(p.pid, p.starttime) for p in processes}
        self._numa = {k: v for k, v in self._numa.items() if k in live_keys}
        self.last_numa_maps_seconds = numa_cost
        cfg = self._config_for(root, root_start, Problems()) if is_vllm else EngineConfig()
        tp = max(1, cfg.tensor_parallel_size)
        processes = [
            p.model_copy(update={"rank": (p.pp_rank or 0) * tp + (p.tp_rank or 0)}) if p.role == Role.WORKER else p
            for p in processes
        ]
        return Engine(root_pid=root, processes=tuple(processes), config=cfg, is_vllm=is_vllm)
