"""Helpers for driving the dashboard in tests: deterministic sources and waiting on the app."""

from __future__ import annotations

import asyncio
import os
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


async def until_replayed(pilot) -> None:
    """Wait until a replay app has shown its last sample, and the screen has settled."""
    await wait_for(lambda: pilot.app.replay_done)
    await pilot.pause(0.2)


def screen_lines(app: NumatopApp) -> list[str]:
    """The screen's lines as plain text, as a terminal shows them (modal screens included)."""
    strips = app.screen._compositor.render_strips()
    return ["".join(seg.text for seg in strip) for strip in strips]


def screen_text(app: NumatopApp) -> str:
    return "\n".join(screen_lines(app))
