"""Regenerate the screenshots in this folder: SVG from Textual, PNG with rsvg-convert.

.venv/bin/python screenshots/make_screenshots.py            # demo views, 16-node box
.venv/bin/python screenshots/make_screenshots.py --real     # also a real vLLM CPU engine (TP=2),
                                                             # started from the test bed (tests/testbed)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TZ", "UTC")

from numatop_llm.dashboard.app import NumatopApp  # noqa: E402
from numatop_llm.demo.seedbox import write_box_sysfs  # noqa: E402
from numatop_llm.monitor.sources import LiveSource  # noqa: E402
from tests.tui_support import (  # noqa: E402
    demo_frames,
    demo_upto,
    fixture_snapshots,
    replay_app,
    until_replayed,
    wait_for,
)


async def shoot(
    app: NumatopApp, name: str, size: tuple[int, int], keys: tuple[str, ...] = (), live: bool = False
) -> Path:
    async with app.run_test(size=size) as pilot:
        if live:
            await wait_for(lambda: app.state.samples >= 3, timeout=60)
        else:
            await until_replayed(pilot)
        for k in keys:
            await pilot.press(k)
            await pilot.pause(0.4)
        if keys and (keys[-1] == "w" or "w" in keys):
            await pilot.pause(1.5)  # the solver's table
        path = HERE / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(HERE))
        return path


async def shoot_snc_off() -> Path:
    """The what-if with SNC off: ctrl+n focuses "nodes/socket (BIOS)", type 1, load the story's TP=2 KV 4 GiB."""
    from numatop_llm.widgets.whatif import WhatIfScreen

    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 30)) as pilot:
        await until_replayed(pilot)
        await pilot.press("w")
        await wait_for(lambda: isinstance(app.screen, WhatIfScreen))
        screen = app.screen
        await pilot.press("ctrl+n", "1")
        await pilot.pause(0.4)
        screen.load(screen.base.model_copy(update={"tp": 2, "kv_gib": 4.0}))
        await wait_for(lambda: bool(screen.candidates) and "remote" in screen.candidates[0].why, 60)
        await pilot.pause(0.5)
        app.save_screenshot(filename="demo-whatif-snc-off.svg", path=str(HERE))
        return HERE / "demo-whatif-snc-off.svg"


def to_png(svg: Path) -> None:
    tool = shutil.which("rsvg-convert")
    if tool is None:
        print("rsvg-convert missing (apt-get install librsvg2-bin): SVG only", file=sys.stderr)
        return
    subprocess.run([tool, "-o", str(svg.with_suffix(".png")), str(svg)], check=True)


async def main(real: bool) -> None:
    shots: list[Path] = []
    shots.append(await shoot(replay_app(demo_upto(29)), "demo-overview", (100, 30)))
    shots.append(await shoot(replay_app(demo_upto(29)), "demo-overview-80x24", (80, 24)))
    shots.append(await shoot(replay_app(list(demo_frames())), "demo-after-kill", (100, 30)))
    shots.append(await shoot(replay_app(demo_upto(29)), "demo-processes", (100, 30), ("2", "down", "down")))
    shots.append(await shoot(replay_app(demo_upto(29)), "demo-whatif", (100, 30), ("w",)))
    shots.append(await shoot_snc_off())
    shots.append(await shoot(replay_app(list(demo_frames())), "demo-memory", (100, 30), ("3",)))
    shots.append(await shoot(replay_app(demo_upto(29)), "help", (100, 30), ("question_mark",)))
    with tempfile.TemporaryDirectory() as tmp:
        big = replay_app(fixture_snapshots(write_box_sysfs(Path(tmp) / "big"), "bigbox-16n"))
        shots.append(await shoot(big, "sixteen-nodes", (100, 30)))
    if real:
        from tests.testbed.engine import running_engine, testbed_ready

        why = testbed_ready()
        if why:
            print(f"no real engine screenshot: {why}", file=sys.stderr)
        else:
            with running_engine(tp=2, warm_up=False) as eng:
                app = NumatopApp(LiveSource(pid=eng.pid, kernel_log=None), interval=1.0)
                shots.append(await shoot(app, "real-engine-tp2", (100, 30), live=True))
                app = NumatopApp(LiveSource(pid=eng.pid, kernel_log=None), interval=1.0)
                shots.append(await shoot(app, "real-engine-tp2-processes", (100, 30), ("2", "down", "down"), live=True))
    for s in shots:
        to_png(s)
        print(f"wrote {s.relative_to(HERE.parent)} (+ .png)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="also start a real vLLM CPU engine (test bed) and shoot it")
    asyncio.run(main(ap.parse_args().real))
