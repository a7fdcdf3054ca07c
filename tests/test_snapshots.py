"""Screenshots of the main views compared with the stored ones (pytest-textual-snapshot).

Regenerate after an intended change with ``pytest tests/test_snapshots.py --snapshot-update``
and look at the report before committing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from numatop_llm.demo.seedbox import write_box_sysfs
from tests.tui_support import demo_frames, demo_upto, fixture_snapshots, replay_app, settle, until_replayed

pytestmark = pytest.mark.timeout(240)


def test_demo_overview_100x30(snap_compare) -> None:
    assert snap_compare(replay_app(demo_upto(29)), terminal_size=(100, 30), run_before=until_replayed)


def test_demo_overview_80x24(snap_compare) -> None:
    assert snap_compare(replay_app(demo_upto(29)), terminal_size=(80, 24), run_before=until_replayed)


def test_demo_after_the_kill_80x24(snap_compare) -> None:
    assert snap_compare(replay_app(list(demo_frames())), terminal_size=(80, 24), run_before=until_replayed)


def test_sixteen_node_box_100x30(snap_compare, tmp_path: Path) -> None:
    app = replay_app(fixture_snapshots(write_box_sysfs(tmp_path / "big"), "bigbox-16n"))
    assert snap_compare(app, terminal_size=(100, 30), run_before=until_replayed)


def test_processes_tab_100x30(snap_compare) -> None:
    async def go(pilot) -> None:
        await until_replayed(pilot)
        await pilot.press("2", "down", "down")
        await settle(pilot)

    assert snap_compare(replay_app(demo_upto(29)), terminal_size=(100, 30), run_before=go)


def test_help_100x30(snap_compare) -> None:
    async def go(pilot) -> None:
        await until_replayed(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(replay_app(demo_upto(29)), terminal_size=(100, 30), run_before=go)
