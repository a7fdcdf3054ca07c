"""Pytest fixtures for the real vLLM CPU testbed (imported by tests/conftest.py with ``import *``).

- ``vllm_testbed`` (session): the built venv and model; skips locally when not built, fails in CI.
- ``vllm_engines`` (session): an :class:`EngineSwitch` that keeps at most ONE shared engine alive
  (2 cores cannot run two) and switches between TP=1 and TP=2 on demand, warm.
- ``vllm_engine_tp1`` / ``vllm_engine_tp2``: the shared, warm engine at TP=1 (bind ``auto``) or TP=2
  (bind from :func:`default_bind`, ``0|1`` here). The engine lives for the session; the fixture
  itself is function-scoped so that a switch in between can never hand out a stopped engine.
  A module- or session-scoped fixture that needs an engine should take ``vllm_engines`` and call
  ``.get(tp=...)``.
- ``vllm_engine_factory``: custom engines (launcher tests); stops the shared one first; every engine
  it starts is stopped at the end of the test.

Tests that use these are moved to the end of the run, grouped TP=1, then TP=2, then custom engines,
so the shared engine is switched as rarely as possible. A test that asks for an engine fixture through
``request.getfixturevalue`` is placed right when the name is a parameter of the test; otherwise it
may set ``vllm_stage`` on its function (10 TP=1, 30 TP=2, 50 custom) to place itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.testbed.engine import (
    RunningEngine,
    StopReport,
    default_bind,
    start_engine,
    testbed_ready,
    tiny_model_path,
    venv_dir,
    vllm_executable,
    vllm_python,
)

__all__ = [
    "EngineFactory",
    "EngineSwitch",
    "Testbed",
    "pytest_collection_modifyitems",
    "vllm_engine_factory",
    "vllm_engine_tp1",
    "vllm_engine_tp2",
    "vllm_engines",
    "vllm_testbed",
]

IN_CI = bool(os.environ.get("CI"))


@dataclass(frozen=True)
class Testbed:
    venv: Path
    python: Path
    vllm: Path
    model: Path


@pytest.fixture(scope="session")
def vllm_testbed() -> Testbed:
    reason = testbed_ready()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return Testbed(venv=venv_dir(), python=vllm_python(), vllm=vllm_executable(), model=tiny_model_path())


def _say(msg: str) -> None:
    # visible with -s, and in the captured output of a failing test otherwise
    print(f"[vllm testbed] {msg}", file=sys.stderr, flush=True)


class EngineSwitch:
    """At most one shared engine alive; ``get`` returns the live one or switches to the one asked for."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.current: RunningEngine | None = None
        self.key: tuple[int, str] | None = None
        self.history: list[dict] = []  # one entry per start: tp, bind, ready/warm-up/stop seconds
        self.last_stop: StopReport | None = None

    def get(self, tp: int = 1, bind: str | None = None) -> RunningEngine:
        bind = bind if bind is not None else default_bind(tp)
        if self.current is not None and self.key == (tp, bind) and self.current.alive:
            return self.current
        self.release()
        _say(f"starting vllm serve TP={tp} bind={bind}")
        eng = start_engine(tp=tp, bind=bind, log_dir=self.log_dir, warm_up=True)
        _say(f"TP={tp} ready in {eng.ready_seconds:.1f} s, first completion {eng.warmup_seconds:.1f} s")
        self.history.append(
            {"tp": tp, "bind": bind, "ready_seconds": eng.ready_seconds, "warmup_seconds": eng.warmup_seconds}
        )
        self.current, self.key = eng, (tp, bind)
        return eng

    def release(self) -> StopReport | None:
        """Stop the shared engine (if any) and return what stopping it took."""
        eng, self.current, self.key = self.current, None, None
        if eng is None:
            return None
        report = eng.stop()
        self.last_stop = report
        for h in reversed(self.history):
            if h["tp"] == eng.tp and "stop_seconds" not in h:
                h["stop_seconds"] = report.seconds
                break
        _say(
            f"TP={eng.tp} stopped in {report.seconds:.1f} s (killed={report.killed}), "
            f"removed {len(report.removed_shm)} /dev/shm segments, {len(report.removed_dirs)} dist dirs"
        )
        return report


@pytest.fixture(scope="session")
def vllm_engines(vllm_testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineSwitch]:
    switch = EngineSwitch(tmp_path_factory.mktemp("vllm-logs"))
    try:
        yield switch
    finally:
        switch.release()


@pytest.fixture
def vllm_engine_tp1(vllm_engines: EngineSwitch) -> RunningEngine:
    """The shared warm TP=1 engine (bind ``auto``)."""
    return vllm_engines.get(tp=1)


@pytest.fixture
def vllm_engine_tp2(vllm_engines: EngineSwitch) -> RunningEngine:
    """The shared warm TP=2 engine (``default_bind(2)``: ``0|1`` on a 2-CPU, one-node machine)."""
    return vllm_engines.get(tp=2)


class EngineFactory:
    """Starts custom engines for one test (``factory(tp=2, kv_gib=0.5, extra_args=[...])``)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.engines: list[RunningEngine] = []

    def __call__(self, tp: int = 1, bind: str | None = None, **kwargs) -> RunningEngine:
        """Same arguments as :func:`tests.testbed.engine.start_engine`; stopped at the end of the test."""
        kwargs.setdefault("log_dir", self.log_dir)
        eng = start_engine(tp, bind, **kwargs)
        self.engines.append(eng)
        return eng

    def stop_all(self) -> list[StopReport]:
        return [e.stop() for e in self.engines]


@pytest.fixture
def vllm_engine_factory(vllm_engines: EngineSwitch, tmp_path: Path) -> Iterator[EngineFactory]:
    vllm_engines.release()  # two engines at once starve a 2-core machine
    factory = EngineFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


_STAGES = {"vllm_engine_tp1": 10, "vllm_engine_tp2": 30, "vllm_engine_factory": 50}


def _stage(item: pytest.Item) -> int:
    explicit = getattr(getattr(item, "function", None), "vllm_stage", None)
    if explicit is not None:
        return int(explicit)
    names = set(getattr(item, "fixturenames", ()))
    # a test parametrized over fixture names and calling request.getfixturevalue(name)
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {v for v in callspec.params.values() if isinstance(v, str)}
    stages = [s for n, s in _STAGES.items() if n in names]
    if stages:
        return max(stages)
    return 40 if "vllm_engines" in names else 0


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run real-engine tests last, grouped by the engine they share (a stable sort)."""
    items.sort(key=_stage)
