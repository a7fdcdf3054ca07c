"""What-if planner: predict per rank and per node whether a vLLM CPU configuration fits, and rank the best.

Public API (others code against it; never imports Textual)::

    load_model(path) -> ModelSpec          seed_model() -> ModelSpec
    PlanConfig(tp=, pp=, bind=, kv_gib=, reserved_cpus=, max_model_len=, max_num_seqs=, dtype=,
               gpu_memory_utilization=, vllm_version=)   .summary() .env() .args()
    make_plan(model, topology, config, *, engine=None) -> Plan   (never raises for a bad config)
    config_from_engine(EngineConfig) -> PlanConfig
    solve(model, topology, base=None, limit=20) -> list[Candidate]

Modules: ``model`` (safetensors headers, config arithmetic), ``shard`` (TP/PP splits), ``bind``
(CPU lists and memory nodes per rank), ``overhead`` (calibrated runtime bytes), ``plan``
(verdicts, vLLM's errors, findings), ``solve`` (enumerate and rank), ``render`` (text/rich output).
"""

from __future__ import annotations

from numatop_llm.planner.config import PlanConfig, config_from_engine, parse_version
from numatop_llm.planner.model import ModelError, ModelSpec, load_model, read_safetensors_header, seed_model
from numatop_llm.planner.plan import Plan, RankPlan, make_plan
from numatop_llm.planner.solve import Candidate, solve

__all__ = [
    "Candidate",
    "ModelError",
    "ModelSpec",
    "Plan",
    "PlanConfig",
    "RankPlan",
    "config_from_engine",
    "load_model",
    "make_plan",
    "parse_version",
    "read_safetensors_header",
    "seed_model",
    "solve",
]
