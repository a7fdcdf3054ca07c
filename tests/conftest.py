"""Shared pytest configuration: fixture trees, the seed box, and the real-engine/VM fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from numatop_llm.probes.roots import SysRoots
from tests.testbed.fixtures import *  # noqa: F403  (the real vLLM CPU testbed's fixtures)

REPO = Path(__file__).resolve().parent.parent
#: copies of the gathered real machines (sysfs trees) and model configs, kept in the repository
#: so that a clone alone passes its suite; see tests/fixtures/sysfs/README.md for their traps
FIXTURES = REPO / "tests" / "fixtures"
SYSFS_FIXTURES = FIXTURES / "sysfs"
IN_CI = bool(os.environ.get("CI"))


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


def require_fixtures() -> None:
    """The gathered trees are part of the repository: their absence is a broken checkout."""
    if not fixture_dirs():
        pytest.fail(f"fixture trees missing at {SYSFS_FIXTURES}")
