"""Helpers for driving the dashboard in tests: deterministic sources and waiting on the app."""

from __future__ import annotations

import asyncio
import html
import os
import re
import time
from functools import cache

from numatop_llm.dashboard.app import NumatopApp
from numatop_llm.demo.story import story
from numatop_llm.monitor.sources import ReplaySource
from numatop_llm.probes.models import Snapshot
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.snapshot import SnapshotReader

os.environ["TZ"] = "UTC"
time.tzset()


@cache
def demo_frames() -> tuple[Snapshot, ...]:
    return tuple(story())


def demo_upto(seconds: int) -> list[Snapshot]:
    """The demo's samples up to ``seconds`` into the story (29: both workers near full; 48: all)."""
    return list(demo_frames()[: seconds + 1])


def fixture_snapshots(roots: SysRoots, host: str, kernel: str = "6.8.0-test") -> list[Snapshot]:
    """One real reading of a sysfs tree, with host/kernel/timing fixed so screenshots are stable."""
    snap = SnapshotReader(roots).read()
    return [
        snap.model_copy(update={"host": host, "kernel": kernel, "taken_at": 1_784_030_580.0, "sample_seconds": 0.01})
    ]


def replay_app(snaps: list[Snapshot], **kw) -> NumatopApp:
    return NumatopApp(ReplaySource(snaps, label="replay", speed=1000.0), **kw)


async def wait_for(pred, timeout: float = 20.0, step: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for the app")
        await asyncio.sleep(step)


async def settle(pilot) -> None:
    """Wait until the app has handled every pending message and finished its animations."""
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    await pilot.pause()


async def until_replayed(pilot) -> None:
    """Wait until a replay app has shown its last sample, and the screen has settled."""
    await wait_for(lambda: pilot.app.replay_done)
    await settle(pilot)


_TEXT = re.compile(r"<text\b([^>]*)>([^<]*)</text>")
_X = re.compile(r'\bx="([\d.]+)"')
_LINE = re.compile(r"-line-(\d+)\)")
#: Rich draws one terminal cell 12.2 SVG units wide (0.61 × its 20-unit font)
_CELL = 12.2


def screen_lines(app: NumatopApp) -> list[str]:
    """The screen's lines as plain text, as a terminal shows them (modal screens included).

    Read from Textual's public screenshot export (SVG), one text run per cell range.
    """
    width, height = app.size
    rows = [[" "] * width for _ in range(height)]
    for attrs, body in _TEXT.findall(app.export_screenshot()):
        line, x = _LINE.search(attrs), _X.search(attrs)
        if line is None or x is None:
            continue
        row, col = int(line.group(1)), round(float(x.group(1)) / _CELL)
        for i, ch in enumerate(html.unescape(body).replace("\xa0", " ").rstrip("\n")):
            if row < height and 0 <= col + i < width:
                rows[row][col + i] = ch
    return ["".join(r) for r in rows]


def screen_text(app: NumatopApp) -> str:
    return "\n".join(screen_lines(app))
