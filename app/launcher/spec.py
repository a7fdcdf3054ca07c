"""What it takes to start an engine again: :class:`LaunchSpec`, captured from a running API server.

The API server keeps the engine's whole environment (vLLM blanks the environ of the engine core
and the workers), its argv, cwd and owner. :func:`capture` reads them exactly, unmasked, because
the relaunch must start the same command with the same secrets; every way a spec leaves this
module for display (``repr``, :meth:`LaunchSpec.summary`, :func:`numatop_llm.launcher.diff.diff`) is masked.

Beyond argv and environment, a capture keeps what shapes placement from outside the command:
the cgroups the API server runs in (a memory limit, a cpuset) and, when it was started under
``numactl`` or ``taskset``, its CPU affinity and memory policy, so a restart reproduces them.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from numatop_llm.launcher import argv as A
from numatop_llm.probes.engine import find_root
from numatop_llm.probes.models import EngineConfig, Role
from numatop_llm.probes.numa_maps import read_numa_maps
from numatop_llm.probes.process import read_cmdline, read_environ, read_link
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.secrets import MASK, is_secret_name, mask_argv, mask_env
from numatop_llm.probes.textio import Problems, read_text
from numatop_llm.probes.threads import parse_stat
from numatop_llm.probes.vllm import classify, engine_config, parse_serve_argv, vllm_version_near

#: vLLM's default port for ``vllm serve``
DEFAULT_PORT = 8000

ENV_BIND = "VLLM_CPU_OMP_THREADS_BIND"
ENV_KV = "VLLM_CPU_KVCACHE_SPACE"
ENV_RESERVED = "VLLM_CPU_NUM_OF_RESERVED_CPU"


class CaptureError(LookupError):
    """The PID cannot be captured: gone, not a ``vllm serve`` API server, or unreadable. One line."""


@dataclass(frozen=True, repr=False)
class LaunchSpec:
    """How to start one ``vllm serve`` engine: argv, program, cwd, owner, environment and placement.

    ``_env`` and ``_api_key`` hold real secrets: use :meth:`environment` only to exec; ``repr`` and
    :meth:`summary` show them masked.
    """

    argv: tuple[str, ...]
    #: the file to exec (the interpreter, as the engine's own argv[0] named it, so a venv stays a venv)
    program: str
    cwd: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    _env: tuple[tuple[str, str], ...] = ()
    host: str | None = None
    port: int = DEFAULT_PORT
    model: str | None = None
    served_name: str | None = None
    #: the running API server this spec was captured from (None for a spec not started yet)
    pid: int | None = None
    starttime: int = 0
    #: the interpreter ``/proc/PID/exe`` resolves to
    exe: str | None = None
    #: ``numactl`` options to start under (inherited from the old engine's policy, or a plan's)
    numactl: tuple[str, ...] = ()
    #: ``(hierarchy, path)`` from ``/proc/PID/cgroup``: ``memory``, ``cpuset``, … or ``""`` for v2
    cgroups: tuple[tuple[str, str], ...] = ()
    #: CPU affinity to restore when it was narrower than the machine (and no numactl covers it)
    cpus_allowed: tuple[int, ...] = ()
    vllm_version: str | None = None
    _api_key: str | None = None
    notes: tuple[str, ...] = ()

    # -- secrets -------------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The real environment to exec with. Never print it."""
        return dict(self._env)

    @property
    def env_masked(self) -> dict[str, str]:
        return mask_env(dict(self._env))

    @property
    def api_key(self) -> str | None:
        """The key the engine's ``/v1`` routes require (``--api-key`` or ``VLLM_API_KEY``), for the verify request."""
        return self._api_key

    def secret_values(self) -> set[str]:
        """Every secret value this spec carries (env values under secret names, secret flag values)."""
        out = {v for k, v in self._env if is_secret_name(k) and v}
        for real, masked in zip(self.argv, mask_argv(self.argv), strict=True):
            if real != masked:
                out.add(real.partition("=")[2] if "=" in real and masked.endswith(f"={MASK}") else real)
        if self._api_key:
            out.add(self._api_key)
        return out

    def __repr__(self) -> str:
        return (
            f"LaunchSpec(pid={self.pid}, program={self.program!r}, argv={mask_argv(self.argv)!r}, "
            f"cwd={self.cwd!r}, uid={self.uid}, gid={self.gid}, port={self.port}, numactl={list(self.numactl)!r}, "
            f"env=<{len(self._env)} variables, masked: {self.env_masked!r}>)"
        )

    # -- derived facts ------------------------------------------------------------------------
    @property
    def config(self) -> EngineConfig:
        """The engine configuration this spec starts (env masked)."""
        return engine_config(self.argv, dict(self._env), self.vllm_version)

    @property
    def base_url(self) -> str:
        host = self.host
        if not host or host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def command(self, numactl_path: str | None = None) -> list[str]:
        """The argv to exec (with the numactl prefix when there is one); argv[0] of Python stays as captured."""
        if self.numactl:
            numactl = numactl_path or shutil.which("numactl") or "numactl"
            return [numactl, *self.numactl, self.program, *self.argv[1:]]
        return list(self.argv)

    def executable(self, numactl_path: str | None = None) -> str:
        if self.numactl:
            return numactl_path or shutil.which("numactl") or "numactl"
        return self.program

    def masked_command(self) -> str:
        """The command as one shell-quoted line, secrets shown as ``****``."""
        return " ".join(a if MASK in a and shlex.quote(a) != a else shlex.quote(a) for a in mask_argv(self.command()))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready, masked description (for the journal and ``--json``)."""
        cfg = self.config
        return {
            "pid": self.pid,
            "command": mask_argv(self.command()),
            "cwd": self.cwd,
            "uid": self.uid,
            "gid": self.gid,
            "host": self.host,
            "port": self.port,
            "model": self.model,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "pipeline_parallel_size": cfg.pipeline_parallel_size,
            "env": {k: v for k, v in self.env_masked.items() if k.startswith(("VLLM_", "OMP_", "KMP_", "GOMP_"))},
            "numactl": list(self.numactl),
            "cgroups": {k or "unified": v for k, v in self.cgroups if v not in ("/", "")},
        }

    # -- rewriting ----------------------------------------------------------------------------
    def with_changes(
        self,
        args: Mapping[str, str | None] | None = None,
        env: Mapping[str, str | None] | None = None,
        numactl: Sequence[str] | None = None,
    ) -> LaunchSpec:
        """A new spec (not running) with flags set (``None`` removes) and env names set (``None`` unsets)."""
        argv = list(self.argv)
        for flag, value in (args or {}).items():
            argv = A.remove_flag(argv, flag) if value is None else A.set_flag(argv, flag, value)
        new_env = dict(self._env)
        for name, value in (env or {}).items():
            if value is None:
                new_env.pop(name, None)
            else:
                new_env[name] = value
        changes: dict[str, Any] = {"argv": tuple(argv), "_env": tuple(new_env.items()), "pid": None, "starttime": 0}
        if numactl is not None:
            changes["numactl"] = tuple(numactl)
            changes["cpus_allowed"] = ()  # the new numactl prefix decides placement
        return replace(self, **changes)

    def with_plan(self, config: Any, numactl_prefix: str | Sequence[str] | None = None) -> LaunchSpec:
        """The spec for a planner ``PlanConfig``, changing only what differs from this engine.

        ``tp``/``pp``/``max_model_len``/``max_num_seqs``/``dtype``/``gpu_memory_utilization`` map to
        their ``vllm serve`` flags, ``bind``/``kv_gib``/``reserved_cpus`` to ``VLLM_CPU_*``; a value
        equal to the running one changes nothing, ``None`` where the engine has a value removes it.
        Fields equal to the planner's own reading of this engine (``config_from_engine``) are left
        alone, so defaults the planner fills in never reach the command line.
        ``numactl_prefix`` (a string or a list of options) replaces any numactl prefix; ``""`` drops it.
        """
        args, env = plan_changes(self, config, planner_baseline(self))
        numactl = None
        if numactl_prefix is not None:
            numactl = shlex.split(numactl_prefix) if isinstance(numactl_prefix, str) else list(numactl_prefix)
        return self.with_changes(args, env, numactl)


# -- plan → changes ----------------------------------------------------------------------------
_FLAG_FIELDS = (
    ("tp", "--tensor-parallel-size", int),
    ("pp", "--pipeline-parallel-size", int),
    ("max_model_len", "--max-model-len", int),
    ("max_num_seqs", "--max-num-seqs", int),
    ("max_num_batched_tokens", "--max-num-batched-tokens", int),
    ("dtype", "--dtype", str),
    ("gpu_memory_utilization", "--gpu-memory-utilization", float),
)
_ENV_FIELDS = (
    ("bind", ENV_BIND, str),
    ("kv_gib", ENV_KV, float),
    ("reserved_cpus", ENV_RESERVED, int),
)
#: vLLM's defaults for flags the command may leave out (absent flag == this value)
_FLAG_DEFAULTS = {"tp": 1, "pp": 1}


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def _same(a: Any, b: Any, kind: type) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        if kind is float:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
        if kind is int:
            return int(a) == int(b)
    except (TypeError, ValueError):
        return False
    return str(a) == str(b)


def planner_baseline(spec: LaunchSpec) -> Any:
    """The planner's config for the engine as it runs (``config_from_engine``), or None without a planner.

    A plan config carries every field, some filled with vLLM's defaults the command never named
    (``--gpu-memory-utilization 0.92``); only fields that differ from this baseline are plan changes.
    """
    try:
        from numatop_llm.planner import config_from_engine
    except Exception:
        return None
    try:
        return config_from_engine(spec.config)
    except Exception:
        return None


def plan_changes(
    spec: LaunchSpec, config: Any, baseline: Any = None
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The flags and env names a plan config changes against ``spec`` (values ``None`` = remove).

    A field equal to ``baseline``'s (the planner's view of the running engine) is not a change.
    """
    env = dict(spec._env)
    args: dict[str, str | None] = {}
    kinds = {attr: kind for attr, _, kind in _FLAG_FIELDS} | {attr: kind for attr, _, kind in _ENV_FIELDS}

    def unchanged(attr: str) -> bool:
        return (
            baseline is not None
            and hasattr(baseline, attr)
            and _same(getattr(config, attr), getattr(baseline, attr), kinds[attr])
        )

    for attr, flag, kind in _FLAG_FIELDS:
        if not hasattr(config, attr) or unchanged(attr):
            continue
        want = getattr(config, attr)
        have: Any = A.get_flag(spec.argv, flag)
        if have is None:
            have = _FLAG_DEFAULTS.get(attr)
        if want is None and attr in _FLAG_DEFAULTS:
            continue
        if not _same(want, have, kind):
            args[flag] = None if want is None else _fmt(want)
    env_changes: dict[str, str | None] = {}
    for attr, name, kind in _ENV_FIELDS:
        if not hasattr(config, attr) or unchanged(attr):
            continue
        want = getattr(config, attr)
        have = env.get(name)
        if have == "":
            have = None
        if not _same(want, have, kind):
            env_changes[name] = None if want is None else _fmt(want)
    return args, env_changes


# -- capture -----------------------------------------------------------------------------------
def _status_ids(text: str) -> tuple[int | None, int | None, tuple[int, ...], tuple[int, ...]]:
    uid = gid = None
    groups: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()
    from numatop_llm.probes.cpulist import parse_cpulist

    for line in text.splitlines():
        key, _, val = line.partition(":")
        parts = val.split()
        try:
            if key == "Uid" and parts:
                uid = int(parts[0])
            elif key == "Gid" and parts:
                gid = int(parts[0])
            elif key == "Groups":
                groups = tuple(int(p) for p in parts)
            elif key == "Cpus_allowed_list":
                cpus = tuple(parse_cpulist(val.strip()))
        except ValueError:
            continue
    return uid, gid, groups, cpus


def _cgroups(roots: SysRoots, pid: int) -> tuple[tuple[str, str], ...]:
    text = read_text(roots.proc / str(pid) / "cgroup", quiet_missing=True) or ""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[1], parts[2] or "/"))
    return tuple(out)


def _online_cpus(roots: SysRoots) -> tuple[int, ...]:
    from numatop_llm.probes.cpulist import parse_cpulist

    text = read_text(roots.cpu_dir / "online", quiet_missing=True)
    return tuple(parse_cpulist(text)) if text else ()


def _program(argv: Sequence[str], exe: str | None, env: Mapping[str, str], cwd: str | None) -> str | None:
    """The file to exec: argv[0] itself when it is a path (keeps a venv's ``bin/python``), else PATH lookup."""
    first = argv[0] if argv else ""
    if first:
        path = first if os.path.isabs(first) or "/" not in first else os.path.join(cwd or "/", first)
        if "/" in first and os.access(path, os.X_OK):
            return os.path.normpath(path)
        found = shutil.which(first, path=env.get("PATH")) if "/" not in first else None
        if found:
            return found
    return exe


def _numactl_from_policy(roots: SysRoots, pid: int) -> tuple[str, ...]:
    """numactl options reproducing the API server's memory policy (strict bind, interleave, preferred)."""
    nm = read_numa_maps(roots.proc, pid, Problems())
    if nm is None or not nm.policy.nodes:
        return ()
    nodes = ",".join(str(n) for n in nm.policy.nodes)
    return {
        "bind": (f"--membind={nodes}",),
        "interleave": (f"--interleave={nodes}",),
        "prefer": (f"--preferred={nodes}",),
    }.get(nm.policy.mode, ())


def capture(pid: int, roots: SysRoots = SysRoots()) -> LaunchSpec:  # noqa: B008 - SysRoots is frozen
    """Capture the ``vllm serve`` engine that ``pid`` belongs to (any process of its tree).

    Raises :class:`CaptureError` (one line) when the process is gone, is not part of a ``vllm
    serve`` tree, or its environment cannot be read.
    """
    proc = roots.proc
    if pid <= 0 or not (proc / str(pid)).is_dir():
        raise CaptureError(f"no such process: {pid}")
    root = find_root(roots, pid)
    argv = read_cmdline(proc, root)
    if argv is None:
        raise CaptureError(f"process {root} exited while being captured")
    if classify(argv).role != Role.API_SERVER:
        what = " ".join(mask_argv(argv))[:80] or "?"
        raise CaptureError(f"pid {pid} is not part of a `vllm serve` engine (its tree root {root} runs: {what})")
    problems = Problems()
    env = read_environ(proc, root, problems)
    if env is None:
        raise CaptureError(f"cannot read the environment of pid {root}: {'; '.join(problems.items) or 'unknown'}")
    status = read_text(proc / str(root) / "status", problems) or ""
    uid, gid, groups, cpus = _status_ids(status)
    stat = read_text(proc / str(root) / "stat", quiet_missing=True)
    st = parse_stat(stat) if stat else None
    if uid is None or gid is None or st is None:
        raise CaptureError(f"process {root} exited while being captured")
    exe = read_link(proc, root, "exe", problems)
    cwd = read_link(proc, root, "cwd", problems)
    if cwd is None:
        raise CaptureError(f"cannot read the working directory of pid {root}")
    cwd = cwd.removesuffix(" (deleted)")
    program = _program(argv, exe, env, cwd)
    if program is None:
        raise CaptureError(f"cannot tell which program pid {root} runs")
    flags = parse_serve_argv(argv)
    try:
        port = int(flags.get("port") or DEFAULT_PORT)
    except ValueError:
        port = DEFAULT_PORT
    api_key = A.get_flag(argv, "--api-key") or env.get("VLLM_API_KEY") or None
    notes: list[str] = []
    numactl = _numactl_from_policy(roots, root)
    online = _online_cpus(roots)
    keep_cpus = cpus if cpus and online and set(cpus) != set(online) else ()
    if numactl:
        notes.append(f"the API server runs under a memory policy: restarts use numactl {' '.join(numactl)}")
    if keep_cpus:
        from numatop_llm.probes.cpulist import format_cpulist

        notes.append(f"the API server's CPU affinity is {format_cpulist(keep_cpus)}: restarts keep it")
    if A.has_flag(argv, "--config"):
        notes.append("the engine also reads flags from --config: command-line flags override them")
    return LaunchSpec(
        argv=tuple(argv),
        program=program,
        cwd=cwd,
        uid=uid,
        gid=gid,
        groups=groups,
        _env=tuple(env.items()),
        host=flags.get("host"),
        port=port,
        model=flags.get("model"),
        served_name=flags.get("served_name"),
        pid=root,
        starttime=st.starttime,
        exe=exe,
        numactl=numactl,
        cgroups=_cgroups(roots, root),
        cpus_allowed=keep_cpus,
        vllm_version=vllm_version_near(exe, argv, env, cwd),
        _api_key=api_key,
        notes=tuple(notes),
    )


def cgroup_procs_files(spec: LaunchSpec, sys_root: Path = Path("/sys"), own_pid: int | None = None) -> list[Path]:
    """``cgroup.procs`` files the new process must join to sit where the old engine sat.

    Only hierarchies where the old engine's cgroup differs from ours (the launcher's) are listed.
    """
    base = sys_root / "fs" / "cgroup"
    mine = dict(_cgroups(SysRoots(sys=sys_root), own_pid or os.getpid()))
    out: list[Path] = []
    for key, path in spec.cgroups:
        if mine.get(key) == path:
            continue
        rel = path.lstrip("/")
        if key == "":
            candidates = [base / "unified" / rel, base / rel] if (base / "unified").is_dir() else [base / rel]
        else:
            name = key.removeprefix("name=")
            candidates = [base / name / rel] + [base / c / rel for c in name.split(",")]
        for d in candidates:
            if (d / "cgroup.procs").is_file():
                out.append(d / "cgroup.procs")
                break
    return out
