"""Shared pytest configuration: fixture trees, the seed box, and the real-engine/VM fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from numatop_llm.probes.roots import SysRoots

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SYSFS_FIXTURES = SHARED / "fixtures" / "sysfs"
IN_CI = bool(os.environ.get("CI"))

try:  # the real vLLM CPU testbed (built by tests/testbed/build_vllm.sh)
    from tests.testbed.fixtures import *  # noqa: F403
except ModuleNotFoundError:  # pragma: no cover - only before the testbed lands
    pass


def fixture_dirs() -> list[Path]:
    if not SYSFS_FIXTURES.is_dir():
        return []
    return sorted(p for p in SYSFS_FIXTURES.iterdir() if (p / "EXPECTED.json").is_file())


def fixture_roots(path: Path) -> SysRoots:
    return SysRoots(proc=path / "proc", sys=path / "sys")


def expected(path: Path) -> dict:
    return json.loads((path / "EXPECTED.json").read_text())


@pytest.fixture(scope="session")
def seed_roots(tmp_path_factory: pytest.TempPathFactory) -> SysRoots:
    from numatop_llm.demo.seedbox import write_seed_sysfs

    return write_seed_sysfs(tmp_path_factory.mktemp("seedbox"))


def require_shared() -> None:
    if not SYSFS_FIXTURES.is_dir():
        if IN_CI:
            pytest.fail(f"shared fixtures missing at {SYSFS_FIXTURES}")
        pytest.skip("shared fixtures not present")
