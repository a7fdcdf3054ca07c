"""The what-if editor's machine options (issue #17): nodes per socket, BIOS interleave, numactl.

Pilot tests on the bundled demo (the seed box), and one in a real tmux terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.tmux_support import Tmux
from tests.tui_support import demo_upto, replay_app, screen_text, until_replayed, wait_for

APP = f"{Path(sys.executable).parent / 'numatop-llm'}"


async def _open_whatif(app, pilot):
    from numatop_llm.widgets.whatif import WhatIfScreen

    await until_replayed(pilot)
    await pilot.press("w")
    await wait_for(lambda: isinstance(app.screen, WhatIfScreen))
    return app.screen


async def test_snc_off_makes_tp2_fit_and_shows_what_it_costs() -> None:
    app = replay_app(demo_upto(29))
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open_whatif(app, pilot)
        screen.load(screen.base.model_copy(update={"tp": 2, "kv_gib": 4.0, "max_model_len": 8192}))
        await pilot.pause(0.1)
        assert screen.plan.verdict == "oom"  # the story on the machine as it is
        assert screen.placement is not None and screen.placement.mean_remote_share == 0
        screen.query_one("#nps").value = "1"
        await pilot.pause(0.2)
        assert screen.what.machine.label.startswith("1 node(s) per socket")
        assert screen.plan.verdict == "fits"
        assert [r.node_total_bytes // 2**30 for r in screen.plan.ranks] == [125, 125]
        # the BIOS change needs the engine stopped: its workers' 2 × 28.2 GiB on old nodes 0 and 1 (both now in
        # node 0) count as available again; old nodes 4-7 keep the recording's other users (~8 GiB each)
        b0, b1 = (r.node_budget_bytes / 2**30 for r in screen.plan.ranks)
        assert b0 > 120 and 90 < b1 < 100, (b0, b1)
        text = screen_text(app)
        assert "Machine: 1 node(s) per socket" in text and "75% of memory traffic remote" in text
        # a BIOS change is not relaunched: Enter says so and stays
        screen.query_one("#go").focus()
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen is screen
        # what cannot be derived is said in one line
        screen.query_one("#nps").value = "8"
        await pilot.pause(0.2)
        assert screen.plan is None and "cannot be split" in screen_text(app)
        screen.query_one("#nps").value = ""
        screen.query_one("#numactl").value = "--interleave=0-3"
        await pilot.pause(0.2)
        assert screen.plan.verdict == "oom"
        assert "overrides numactl interleave:0-3" in screen_text(app)
        # the solver ranks on the what-if machine
        screen.query_one("#numactl").value = ""
        screen.query_one("#interleave").value = "0-3|4-7"
        await pilot.pause(0.2)
        await wait_for(lambda: bool(screen.candidates) and "remote" in screen.candidates[0].why, 30)


@pytest.mark.tmux
@pytest.mark.timeout(300)
def test_whatif_offers_the_machine_options_in_a_terminal() -> None:
    with Tmux(f"{APP} --demo --speed 2", 100, 30) as t:
        t.wait_for(" OOM ", 40)
        t.send("w")
        screen = t.wait_for("Prediction:", 20)
        assert "nodes/socket (BIOS)" in screen and "interleave (BIOS)" in screen and "numactl" in screen
        # the machine line and its cost are shown for the machine as it is (editing it: the pilot test above)
        assert "Machine: as it is: 8 node(s), 4 per socket" in screen
        assert "What you give up:" in screen and "remote" in screen
        t.send("Escape")
        time.sleep(0.5)
        t.wait_for("NUMA map", 10)
        t.send("q")
        t.wait_for("[exited rc=0]", 15)
