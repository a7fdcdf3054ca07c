"""What-if configurations: the knobs of ``vllm serve`` and ``VLLM_CPU_*`` the planner models."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from numatop_llm.probes.models import EngineConfig

ENV_BIND = "VLLM_CPU_OMP_THREADS_BIND"
ENV_KV = "VLLM_CPU_KVCACHE_SPACE"
ENV_RESERVED = "VLLM_CPU_NUM_OF_RESERVED_CPU"
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
#: the version whose rules are modelled when none is known (the testbed's)
DEFAULT_VLLM_VERSION = "0.32.0"
#: releases from here on check node memory at start-up, size KV from ``--gpu-memory-utilization`` when
#: ``VLLM_CPU_KVCACHE_SPACE`` is unset, and bind every worker's memory (``init_cpu_memory_env``), also
#: under ``nobind``. Before: KV 4 GiB by default, no check (an over-budget worker dies with -9),
#: no memory bind under ``nobind``. The exact release is approximate (the 4 GiB default went in
#: vLLM PR #29604, 2025-11); the seed story ran 0.8.
MODERN_FROM = (0, 13)


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``0.32.0+cpu`` → (0, 32, 0); None when there is no leading version."""
    if not text:
        return None
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def is_modern(version: str | None) -> bool:
    parsed = parse_version(version) or parse_version(DEFAULT_VLLM_VERSION)
    assert parsed is not None
    return parsed[:2] >= MODERN_FROM


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class PlanConfig(BaseModel):
    """One what-if configuration of a vLLM CPU engine (None = vLLM's default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tp: int = Field(1, description="--tensor-parallel-size")
    pp: int = Field(1, description="--pipeline-parallel-size")
    #: VLLM_CPU_OMP_THREADS_BIND: ``auto``, ``nobind`` or CPU lists per rank ``0-14|15-29``
    bind: str = "auto"
    #: VLLM_CPU_KVCACHE_SPACE in GiB per rank (vLLM reads a whole number); None = unset
    kv_gib: float | None = None
    #: VLLM_CPU_NUM_OF_RESERVED_CPU; None = vLLM's default (one per local rank on x86)
    reserved_cpus: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    dtype: str | None = None
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    vllm_version: str | None = None

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def version(self) -> str:
        return self.vllm_version or DEFAULT_VLLM_VERSION

    @property
    def modern(self) -> bool:
        return is_modern(self.vllm_version)

    def summary(self) -> str:
        """One line, e.g. ``TP=4 PP=1 bind=auto KV=auto reserved=default vLLM 0.32.0``."""
        parts = [f"TP={self.tp}", f"PP={self.pp}", f"bind={self.bind}"]
        parts.append(f"KV={_fmt_num(self.kv_gib)} GiB" if self.kv_gib is not None else "KV=auto")
        parts.append(f"reserved={self.reserved_cpus}" if self.reserved_cpus is not None else "reserved=default")
        if self.max_model_len:
            parts.append(f"max-model-len={self.max_model_len}")
        if self.max_num_seqs:
            parts.append(f"max-num-seqs={self.max_num_seqs}")
        if self.dtype:
            parts.append(f"dtype={self.dtype}")
        if self.gpu_memory_utilization != DEFAULT_GPU_MEMORY_UTILIZATION:
            parts.append(f"gpu-memory-utilization={self.gpu_memory_utilization:g}")
        parts.append(f"vLLM {self.version}" + ("" if self.vllm_version else " (assumed)"))
        return " ".join(parts)

    def env(self) -> dict[str, str]:
        """The ``VLLM_CPU_*`` environment this configuration implies (unset ones are absent)."""
        out = {ENV_BIND: self.bind}
        if self.kv_gib is not None:
            out[ENV_KV] = _fmt_num(self.kv_gib)
        if self.reserved_cpus is not None:
            out[ENV_RESERVED] = str(self.reserved_cpus)
        return out

    def args(self) -> list[str]:
        """The ``vllm serve`` flags this configuration implies (defaults left out, TP always given)."""
        out = ["--tensor-parallel-size", str(self.tp)]
        if self.pp != 1:
            out += ["--pipeline-parallel-size", str(self.pp)]
        if self.max_model_len is not None:
            out += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs is not None:
            out += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_num_batched_tokens is not None:
            out += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.dtype is not None:
            out += ["--dtype", self.dtype]
        if self.gpu_memory_utilization != DEFAULT_GPU_MEMORY_UTILIZATION:
            out += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        return out

    def command(self, model: str = "MODEL") -> str:
        """A shell line that starts vLLM with this configuration."""
        env = " ".join(f"{k}={v}" for k, v in self.env().items())
        return f"{env} vllm serve {model} {' '.join(self.args())}"


def config_from_engine(cfg: EngineConfig) -> PlanConfig:
    """The PlanConfig a running engine was started with (from its argv and environ)."""
    bind = cfg.omp_threads_bind if cfg.omp_threads_bind not in (None, "") else "auto"
    gmu = cfg.gpu_memory_utilization
    batched = None
    for i, a in enumerate(cfg.argv):
        if a == "--max-num-batched-tokens" and i + 1 < len(cfg.argv) and cfg.argv[i + 1].isdigit():
            batched = int(cfg.argv[i + 1])
        elif a.startswith("--max-num-batched-tokens=") and a.split("=", 1)[1].isdigit():
            batched = int(a.split("=", 1)[1])
    return PlanConfig(
        tp=max(1, cfg.tensor_parallel_size),
        pp=max(1, cfg.pipeline_parallel_size),
        bind=bind,
        kv_gib=cfg.kv_cache_gib,
        reserved_cpus=cfg.reserved_cpus,
        max_model_len=cfg.max_model_len,
        max_num_seqs=cfg.max_num_seqs,
        max_num_batched_tokens=batched,
        dtype=cfg.dtype if cfg.dtype not in (None, "", "auto") else None,
        gpu_memory_utilization=gmu if gmu is not None and gmu > 0 else DEFAULT_GPU_MEMORY_UTILIZATION,
        vllm_version=cfg.vllm_version,
    )
