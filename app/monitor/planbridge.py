"""The planner's verdict for the engine being watched: model resolved, plan cached, failures as reasons.

Used off the UI thread by the dashboard's sampler. The model comes from the engine's argv (a
relative path is resolved against the API server's cwd). When that directory cannot be read
here (another user's home, a different host in a recording) and its name is one of the bundled
model descriptions, the bundled config is used instead, and the reason says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from numatop_llm.probes.models import Engine, Topology

if TYPE_CHECKING:  # the planner is imported on first use, on the sampler's thread (first frame stays fast)
    from numatop_llm.planner import ModelSpec, Plan
from numatop_llm.units import MIB

BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "data" / "models"


def model_path(engine: Engine) -> str | None:
    model = engine.config.model
    if not model:
        return None
    path = Path(model)
    if not path.is_absolute():
        root = next((p for p in engine.processes if p.pid == engine.root_pid), None)
        if root is not None and root.cwd:
            path = Path(root.cwd) / path
    return str(path)


@dataclass(frozen=True)
class PlanVerdict:
    """The planner's verdict on the running configuration: a plan, or the one-line reason there is none."""

    plan: Plan | None = None
    #: why there is no plan (model unreadable, planner error)
    problem: str | None = None
    #: a caveat on the plan (e.g. planned from the bundled config of the same name)
    note: str | None = None


class EnginePlanner:
    """``plan(engine, topology)`` → the planner's ``Plan`` for the running configuration, or None.

    Recomputed when the engine, its configuration or a node's total changes (memory onlined
    lazily), and at most every ``every`` seconds otherwise. ``problem`` holds the one-line reason
    when there is no plan.
    """

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self.problem: str | None = None
        self.note: str | None = None
        self._key: tuple | None = None
        self._at = 0.0
        self._plan: Plan | None = None
        self._models: dict[str, ModelSpec] = {}

    def load(self, path: str) -> ModelSpec:
        """The model at ``path``; the bundled description of the same name when the path is unreadable."""
        from numatop_llm import planner

        cached = self._models.get(path)
        if cached is not None:
            return cached
        try:
            model = planner.load_model(path)
            self.note = None
        except planner.ModelError:
            bundled = BUNDLED_MODELS / Path(path).name
            if not (bundled / "config.json").is_file():
                raise
            model = planner.load_model(bundled)
            self.note = f"model dir {path} not readable here: planning with the bundled {Path(path).name} config"
        self._models = {path: model}
        return model

    def verdict(self, engine: Engine | None, topology: Topology) -> PlanVerdict:
        """The plan for ``engine`` on ``topology`` with its problem and note, as one value."""
        plan = self.plan(engine, topology)
        return PlanVerdict(plan, self.problem if engine is not None and engine.is_vllm else None, self.note)

    def plan(self, engine: Engine | None, topology: Topology) -> Plan | None:
        from numatop_llm import planner

        if engine is None or not engine.is_vllm:
            return None
        totals = tuple((n.id, (n.total_bytes or 0) // (64 * MIB)) for n in topology.nodes)
        key = (engine.root_pid, engine.config.model_dump_json(), totals)
        now = time.monotonic()
        if key == self._key and now - self._at < self.every:
            return self._plan
        self._key, self._at = key, now
        try:
            path = model_path(engine)
            if path is None:
                raise ValueError("the engine's model path is unknown")
            model = self.load(path)
            self._plan = planner.make_plan(model, topology, planner.config_from_engine(engine.config), engine=engine)
            self.problem = None
        except Exception as exc:  # planner trouble must never stop the dashboard's samples
            self._plan = None
            self.problem = f"no plan for this engine: {type(exc).__name__}: {exc}"
        return self._plan
