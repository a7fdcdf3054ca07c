"""Find vLLM engines and read a whole engine tree: processes, threads, numa_maps, cgroups."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from numatop_llm.probes.cgroup import cgroup_path, read_cgroup
from numatop_llm.probes.models import Cgroup, Engine, EngineConfig, NumaMaps, Process, Role, Thread
from numatop_llm.probes.numa_maps import read_numa_maps
from numatop_llm.probes.process import (
    ProcBasics,
    children_map,
    list_pids,
    read_basics,
    read_cmdline,
    read_environ,
    read_link,
    relevant_env,
    user_name,
)
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.secrets import mask_argv
from numatop_llm.probes.textio import KeptFiles, Problems
from numatop_llm.probes.threads import ThreadReader
from numatop_llm.probes.vllm import SHELLS, RoleInfo, classify, engine_config, vllm_version_near

#: one sample stops reading numa_maps once its reads took this long (the rest wait for later samples)
NUMA_MAPS_SAMPLE_BUDGET = 0.25


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


def _last_pid(proc: Path, files: KeptFiles) -> int | None:
    """The most recently created PID on the machine (``/proc/loadavg``'s last field), or None."""
    try:
        return int(files.read(f"{proc}/loadavg").split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _statm_resident(proc: Path, pid: int, files: KeptFiles) -> int | None:
    try:
        return int(files.read(f"{proc}/{pid}/statm").split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _migrations(proc: Path, files: KeptFiles) -> int:
    """Pages the kernel has migrated between nodes since boot (NUMA balancing, migrate_pages)."""
    total = 0
    try:
        for line in files.read(f"{proc}/vmstat").splitlines():
            if line.startswith((b"pgmigrate_success ", b"numa_pages_migrated ")):
                total += int(line.split()[1])
    except (OSError, ValueError):
        return -1
    return total


@dataclass(frozen=True)
class _Static:
    cmdline: tuple[str, ...]
    role: RoleInfo
    env: dict[str, str]
    exe: str | None
    cwd: str | None
    user: str | None
    cgroup_key: str


class EngineReader:
    """Reads one engine tree repeatedly; keeps thread descriptors and numa_maps results between reads.

    Reading ``numa_maps`` is the costly part of a sample (the kernel walks page tables, ~40–70 ns
    per resident page), so a previous read is reused while it is provably current: the process's
    resident page count (``statm``) and the pages the kernel migrated between nodes since that read
    (``/proc/vmstat``) add up to at most ``numa_maps_tolerance`` × its resident pages (0: exactly
    unchanged). Per-node bytes are then off by at most that much. ``numa_maps_max_age`` caps how
    long a read may be reused even then; 0 forces a read of every process.

    With ``numa_maps_cost_factor`` F > 0, re-reads are throttled by their cost, for the whole tree:
    after reads that took ``c`` seconds, no process whose memory changed is re-read for ``c × F``
    seconds (≤ 1/F of a core), and none that merely reached the maximum age for ``c ×
    numa_maps_idle_factor`` seconds; the stalest are read first, and one sample stops reading
    after ``NUMA_MAPS_SAMPLE_BUDGET`` seconds. A process seen for the first time is always read.

    The set of processes in the tree is rescanned (reading every process's ``stat`` on the machine)
    at most every ``tree_rescan`` seconds, and only when a process or thread was created on the
    machine since the last scan (``/proc/loadavg``'s last PID moved); at once when a known
    process vanishes.
    ``clock`` (monotonic seconds) is what the cadence is measured with; benchmarks pass a fake one.
    """

    def __init__(
        self, roots: SysRoots, pid: int, *, tree_rescan: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.roots = roots
        self.attach_pid = pid
        self.threads = ThreadReader(roots.proc)
        #: per-process status/stat/statm/cmdline and machine-wide files, kept open between samples
        self.files = KeptFiles(limit=1024)
        self.tree_rescan = tree_rescan
        self.clock = clock
        #: (pid, starttime) → (read at, resident pages then, migrations then, parsed numa_maps)
        self._numa: dict[tuple[int, int], tuple[float, int | None, int, NumaMaps]] = {}
        #: before these (clock) times, changed / merely old numa_maps are not re-read (throttle)
        self._quiet_changed_until = float("-inf")
        self._quiet_aged_until = float("-inf")
        self._config: tuple[int, int, EngineConfig] | None = None
        self._tree: tuple[float, int, list[int]] | None = None
        self._tree_last_pid: int | None = None
        self.last_numa_maps_seconds = 0.0
        self.numa_maps_reads = 0
        self.numa_maps_reused = 0
        self._static: dict[tuple[int, int], _Static] = {}

    def _static_info(
        self, pid: int, starttime: int, cmdline: tuple[str, ...], comm: str, is_root: bool, uid: int | None
    ) -> _Static:
        """What does not change while a process lives: read once per (pid, starttime).

        A process is re-read while it still looks like ``other``: vLLM's engine and workers start
        as ``python -c from multiprocessing…`` and retitle themselves a moment later.
        """
        key = (pid, starttime)
        cached = self._static.get(key)
        if cached is not None and (cached.role.role != Role.OTHER or cached.cmdline == cmdline):
            return cached
        proc = self.roots.proc
        info = classify(cmdline, comm)
        env: dict[str, str] = {}
        if info.role in (Role.API_SERVER, Role.WORKER) or is_root:
            raw = read_environ(proc, pid, Problems())
            env = relevant_env(raw) if raw else {}
        quiet = Problems()
        cg_path = cgroup_path(self.roots, pid, quiet)
        st = _Static(
            cmdline=cmdline,
            role=info,
            env=env,
            exe=read_link(proc, pid, "exe", quiet),
            cwd=read_link(proc, pid, "cwd", quiet),
            user=user_name(uid) if uid is not None else None,
            cgroup_key=cg_path or f"pid:{pid}",
        )
        self._static[key] = st
        return st

    def _scan_tree(self, now: float) -> tuple[int, list[int]]:
        proc = self.roots.proc
        last_pid = _last_pid(proc, self.files)
        if self._tree is not None:
            at, root, tree = self._tree
            # no process (or thread) was created on the machine since the scan: the tree is the same
            unchanged = last_pid is not None and last_pid == self._tree_last_pid
            if (unchanged or now - at < self.tree_rescan) and all(os.path.isdir(f"{proc}/{p}") for p in tree):
                return root, tree
        self._tree_last_pid = last_pid
        pids = list_pids(proc)
        ppids = _ppid_map(proc, pids)
        root = find_root(self.roots, self.attach_pid, ppids)
        kids: dict[int, list[int]] = {}
        for c, p in ppids.items():
            kids.setdefault(p, []).append(c)
        tree = _descendants(root, kids)
        self._tree = (now, root, tree)
        return root, tree

    def close(self) -> None:
        self.threads.close()
        self.files.close()

    def _config_for(self, root: int, starttime: int, problems: Problems) -> EngineConfig:
        if self._config and self._config[:2] == (root, starttime):
            return self._config[2]
        proc = self.roots.proc
        argv = read_cmdline(proc, root) or ()
        env = read_environ(proc, root, problems)
        exe = read_link(proc, root, "exe", Problems())
        cwd = read_link(proc, root, "cwd", Problems())
        cfg = engine_config(argv, env, vllm_version_near(exe, argv, env, cwd))
        self._config = (root, starttime, cfg)
        return cfg

    def read(
        self,
        cpu_node: dict[int, int],
        *,
        numa_maps_max_age: float = 0.0,
        numa_maps_cost_factor: float = 0.0,
        numa_maps_tolerance: float = 0.0,
        numa_maps_idle_factor: float | None = None,
    ) -> Engine:
        """Read the whole tree the attach PID belongs to. Raises NoSuchProcess when it is gone.

        ``numa_maps_cost_factor`` makes the numa_maps cadence cost-aware: a process whose last read
        took ``r`` seconds is not read again sooner than ``r × factor`` seconds, and the reads of the
        whole tree use at most about 1/factor of a core (a 30 GiB worker loading weights costs ~0.3 s
        per read; factor 20 keeps that under 5% of a core). ``numa_maps_idle_factor`` (default: the
        same) throttles the re-reads of processes whose memory did not change, which only refresh
        reads older than ``numa_maps_max_age``. 0 turns the back-off off.
        """
        proc = self.roots.proc
        if not (proc / str(self.attach_pid)).is_dir():
            raise NoSuchProcess(self.attach_pid)
        now = self.clock()
        root, tree = self._scan_tree(now)
        migrations = _migrations(proc, self.files) if numa_maps_max_age > 0 else -1
        idle_factor = numa_maps_cost_factor if numa_maps_idle_factor is None else numa_maps_idle_factor
        seen: list[tuple[int, ProcBasics, _Static, list[Thread], Problems, int | None]] = []
        alive_tids: set[int] = set()
        root_start = 0
        is_vllm = False
        # (priority, read at, index in seen): 0 = never read, 1 = memory changed, 2 = reached the max age
        due: list[tuple[int, float, int]] = []
        numa: dict[int, NumaMaps | None] = {}
        for pid in tree:
            problems = Problems()
            b = read_basics(proc, pid, self.files)
            if not b.alive:
                continue
            problems.extend(b.problems)
            if pid == root:
                root_start = b.starttime
            static = self._static_info(pid, b.starttime, b.cmdline, b.comm, pid == root, b.uid)
            is_vllm = is_vllm or static.role.role != Role.OTHER
            threads = self.threads.read(pid, cpu_node, problems)
            alive_tids.update(t.tid for t in threads)
            resident = _statm_resident(proc, pid, self.files) if numa_maps_max_age > 0 else None
            index = len(seen)
            seen.append((pid, b, static, threads, problems, resident))
            cached = self._numa.get((pid, b.starttime))
            if cached is None:
                due.append((0, float("-inf"), index))
                continue
            read_at, then_resident, then_migrations, nm = cached
            numa[index] = nm
            unchanged = (
                resident is not None
                and then_resident is not None
                and migrations >= 0
                and then_migrations >= 0
                and abs(resident - then_resident) + abs(migrations - then_migrations)
                <= (max(256, int(numa_maps_tolerance * then_resident)) if numa_maps_tolerance > 0 else 0)
            )
            if unchanged and now - read_at <= numa_maps_max_age:
                self.numa_maps_reused += 1
                continue
            if numa_maps_cost_factor > 0 and now - read_at < nm.read_seconds * numa_maps_cost_factor:
                self.numa_maps_reused += 1  # this process's own back-off
                continue
            due.append((2 if unchanged else 1, read_at, index))
        numa_cost = 0.0
        for priority, _, index in sorted(due):
            pid, b, _static, _threads, problems, resident = seen[index]
            if priority and numa_maps_cost_factor > 0:
                quiet_until = self._quiet_changed_until if priority == 1 else self._quiet_aged_until
                if now < quiet_until or numa_cost >= NUMA_MAPS_SAMPLE_BUDGET:
                    self.numa_maps_reused += 1  # throttled: the whole tree's reads stay within budget
                    continue
            fresh = read_numa_maps(proc, pid, problems)
            self.numa_maps_reads += 1
            if fresh is not None:
                self._numa[(pid, b.starttime)] = (now, resident, migrations, fresh)
                numa_cost += fresh.read_seconds
                numa[index] = fresh
        if numa_cost > 0 and numa_maps_cost_factor > 0:
            self._quiet_changed_until = now + numa_cost * numa_maps_cost_factor
            self._quiet_aged_until = now + numa_cost * idle_factor
        processes: list[Process] = []
        cgroups: dict[str, Cgroup | None] = {}
        for index, (pid, b, static, threads, problems, _resident) in enumerate(seen):
            info = static.role
            maps = numa.get(index)
            if static.cgroup_key not in cgroups:
                cgroups[static.cgroup_key] = read_cgroup(self.roots, pid, Problems())
            cg = cgroups[static.cgroup_key]
            node_bytes = dict(maps.node_bytes) if maps else {}
            processes.append(
                Process(
                    pid=pid,
                    ppid=b.ppid,
                    comm=b.comm,
                    cmdline=tuple(mask_argv(b.cmdline)),
                    role=info.role,
                    tp_rank=info.tp_rank,
                    pp_rank=info.pp_rank,
                    label=info.label,
                    exe=static.exe,
                    cwd=static.cwd,
                    uid=b.uid,
                    user=static.user,
                    starttime=b.starttime,
                    rss_bytes=b.rss_bytes,
                    node_bytes=node_bytes,
                    numa_maps=maps,
                    policy=maps.policy if maps else Process.model_fields["policy"].default,
                    cpus_allowed=b.cpus_allowed,
                    mems_allowed=b.mems_allowed,
                    threads=tuple(threads),
                    env=static.env,
                    cgroup=cg,
                    degraded=tuple(problems.items),
                )
            )
        self.threads.forget_missing(alive_tids)
        self.files.sweep()
        live_keys = {(p.pid, p.starttime) for p in processes}
        self._numa = {k: v for k, v in self._numa.items() if k in live_keys}
        self._static = {k: v for k, v in self._static.items() if k in live_keys}
        self.last_numa_maps_seconds = numa_cost
        cfg = self._config_for(root, root_start, Problems()) if is_vllm else EngineConfig()
        tp = max(1, cfg.tensor_parallel_size)
        processes = [
            p.model_copy(update={"rank": (p.pp_rank or 0) * tp + (p.tp_rank or 0)}) if p.role == Role.WORKER else p
            for p in processes
        ]
        return Engine(root_pid=root, processes=tuple(processes), config=cfg, is_vllm=is_vllm)
