"""Recognise vLLM CPU processes: roles and ranks from cmdline, the engine's config from argv/env.

vLLM renames its engine and workers (``VLLM::EngineCore``, ``VLLM::Worker_TP1``); comm is cut to
15 characters, so the cmdline is what we read. Engine and workers blank their environ, so the
configuration comes from the API server (or the nearest ancestor that still has it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from numatop_llm.probes.models import EngineConfig, Role
from numatop_llm.probes.process import relevant_env
from numatop_llm.probes.secrets import mask_argv

_WORKER = re.compile(r"^(?:VLLM::)?Worker(?:_PP(\d+))?(?:_TP(\d+))?(?:_[A-Z]+\d+)*$")
_ENGINE = re.compile(r"^(?:VLLM::)?EngineCore(?:_DP\d+)?$")
_APISERVER = re.compile(r"^(?:VLLM::)?(?:APIServer|ApiServer)(?:_\d+)?$")
SHELLS = {
    "bash",
    "sh",
    "zsh",
    "fish",
    "dash",
    "tmux",
    "tmux: server",
    "screen",
    "sshd",
    "systemd",
    "init",
    "su",
    "sudo",
}


@dataclass(frozen=True)
class RoleInfo:
    role: Role
    tp_rank: int | None = None
    pp_rank: int | None = None
    label: str | None = None


def _is_vllm_cli(cmdline: tuple[str, ...]) -> bool:
    for i, a in enumerate(cmdline[:4]):
        base = Path(a).name
        if base == "vllm" and i + 1 < len(cmdline) and cmdline[i + 1] == "serve":
            return True
        if a == "-m" and i + 1 < len(cmdline) and cmdline[i + 1].startswith("vllm.entrypoints"):
            return True
    return False


def classify(cmdline: tuple[str, ...], comm: str = "") -> RoleInfo:
    """Role and TP/PP rank of a process, from its (possibly retitled) cmdline."""
    first = cmdline[0] if cmdline else comm
    m = _WORKER.match(first)
    if m:
        pp = int(m.group(1)) if m.group(1) else 0
        tp = int(m.group(2)) if m.group(2) else 0
        return RoleInfo(Role.WORKER, tp_rank=tp, pp_rank=pp, label=first.removeprefix("VLLM::"))
    if _ENGINE.match(first):
        return RoleInfo(Role.ENGINE_CORE, label=first.removeprefix("VLLM::"))
    if _APISERVER.match(first) or _is_vllm_cli(cmdline):
        return RoleInfo(Role.API_SERVER)
    return RoleInfo(Role.OTHER)


_VALUE_FLAGS = {
    "--model": "model",
    "--served-model-name": "served_name",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--pipeline-parallel-size": "pipeline_parallel_size",
    "-pp": "pipeline_parallel_size",
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--dtype": "dtype",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--host": "host",
    "--port": "port",
}


def parse_serve_argv(argv: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The flags of a ``vllm serve`` / ``api_server`` command line that matter to NUMA planning.

    A light reader (no vLLM import): ``--flag value``, ``--flag=value`` and the positional model.
    """
    args = list(argv)
    out: dict[str, str] = {}
    start = 0
    for i, a in enumerate(args):
        if a == "serve" and i > 0:
            start = i + 1
            if start < len(args) and not args[start].startswith("-"):
                out["model"] = args[start]
                start += 1
            break
        if a == "-m" and i + 1 < len(args):
            start = i + 2
            break
    i = start
    while i < len(args):
        a = args[i]
        flag, eq, val = a.partition("=")
        key = _VALUE_FLAGS.get(flag)
        if key is None:
            i += 1
            continue
        if eq:
            out[key] = val
            i += 1
        elif i + 1 < len(args):
            out[key] = args[i + 1]
            i += 2
        else:
            i += 1
    return out


def _num(text: str | None, kind: type) -> int | float | None:
    if text is None or text == "":
        return None
    try:
        return kind(text)
    except ValueError:
        return None


def engine_config(argv: tuple[str, ...], env: dict[str, str] | None, vllm_version: str | None = None) -> EngineConfig:
    """Build the engine's configuration from the API server's argv and (unmasked) environ."""
    flags = parse_serve_argv(argv)
    env = env or {}
    return EngineConfig(
        model=flags.get("model"),
        served_name=flags.get("served_name"),
        tensor_parallel_size=int(_num(flags.get("tensor_parallel_size"), int) or 1),
        pipeline_parallel_size=int(_num(flags.get("pipeline_parallel_size"), int) or 1),
        max_model_len=_num(flags.get("max_model_len"), int),  # type: ignore[arg-type]
        max_num_seqs=_num(flags.get("max_num_seqs"), int),  # type: ignore[arg-type]
        dtype=flags.get("dtype"),
        gpu_memory_utilization=_num(flags.get("gpu_memory_utilization"), float),
        host=flags.get("host"),
        port=_num(flags.get("port"), int),  # type: ignore[arg-type]
        kv_cache_gib=_num(env.get("VLLM_CPU_KVCACHE_SPACE"), float),
        omp_threads_bind=env.get("VLLM_CPU_OMP_THREADS_BIND"),
        reserved_cpus=_num(env.get("VLLM_CPU_NUM_OF_RESERVED_CPU"), int),  # type: ignore[arg-type]
        argv=tuple(mask_argv(argv)),
        env=relevant_env(env),
        vllm_version=vllm_version,
    )


def _version_in_prefix(prefix: Path) -> str | None:
    """The vLLM version installed in one Python prefix (``lib/python3*/site-packages/vllm*.dist-info``)."""
    try:
        candidates = sorted(prefix.glob("lib/python3*/site-packages/vllm*.dist-info/METADATA"))
    except OSError:
        return None
    for meta in candidates:
        try:
            head = meta.read_text(errors="replace")[:2000]
        except OSError:
            continue
        name = re.search(r"^Name:\s*(\S+)", head, re.M)
        ver = re.search(r"^Version:\s*(\S+)", head, re.M)
        if name and ver and name.group(1).lower().replace("_", "-") in ("vllm", "vllm-cpu"):
            return ver.group(1)
    return None


def _on_path(name: str, env: Mapping[str, str] | None, cwd: str | None) -> str | None:
    if "/" in name:
        return name if name.startswith("/") or not cwd else str(Path(cwd) / name)
    for d in (env or {}).get("PATH", "").split(":"):
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    return None


def vllm_version_near(
    exe: str | None,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> str | None:
    """The vLLM version a process runs, from the Python prefix its command line points into.

    A virtual environment's ``bin/python`` is a symlink to the base interpreter, so ``/proc/PID/exe``
    (already resolved) leads to the base prefix, not the venv. The command line keeps the unresolved
    paths: the console script (``…/venv/bin/vllm serve``, shown as ``python …/bin/vllm``) or the
    interpreter (``…/venv/bin/python -m vllm.entrypoints…``); a bare ``python`` or ``vllm`` is looked
    up on the process's own ``PATH``. ``bin/X`` → ``X/../..`` is the prefix. ``exe`` is the last resort.
    """
    paths: list[str] = []
    for arg in list(argv[:2]):
        if not arg or arg.startswith("-"):
            break
        found = _on_path(arg, env, cwd)
        if found:
            paths.append(found)
    if exe:
        paths.append(exe)
    seen: set[Path] = set()
    for path in paths:
        prefix = Path(path).parent.parent
        if prefix in seen:
            continue
        seen.add(prefix)
        version = _version_in_prefix(prefix)
        if version:
            return version
    return None
