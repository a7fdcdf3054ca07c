"""The what-if → relaunch loop from the dashboard, on a real process tree shaped like vLLM.

The fake engine (tests/test_launcher_fakes.py) is a real API server → EngineCore → Worker tree
that serves /health, /metrics and completions; it starts in a fraction of a second, so the whole
user loop — w, pick a plan, Enter, watch the steps, come back attached to the new tree — runs
on every test run. The real vLLM relaunch is covered by tests/test_relaunch_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from numatop_llm.dashboard.app import NumatopApp
from numatop_llm.monitor.sources import LiveSource
from numatop_llm.widgets.relaunch_view import RelaunchScreen
from numatop_llm.widgets.whatif import WhatIfScreen
from tests.test_launcher_fakes import fake_vllm_root, free_port
from tests.tui_support import settle, wait_for

pytestmark = pytest.mark.timeout(240)

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2048,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def _environ(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in data.split(b"\0") if b"=" in item)


async def test_whatif_enter_relaunches_and_the_dashboard_follows_the_new_tree(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with fake_vllm_root("tui") as fv:
        (fv.model / "config.json").write_text(json.dumps(TINY_LLAMA))
        port = free_port()
        old = fv.start(port, env={"TMPDIR": str(fv.root), "FAKE_DIST_DIR": str(fv.root)})
        app = NumatopApp(LiveSource(pid=old.pid, kernel_log=None), interval=0.3)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(lambda: app.state.engine is not None and app.state.engine.workers(), 30)
            assert app.state.engine.root_pid == old.pid
            await pilot.press("w")
            await wait_for(lambda: isinstance(app.screen, WhatIfScreen), 30)
            editor = app.screen
            assert editor.can_relaunch, editor.why_not
            editor.load(editor.base.model_copy(update={"kv_gib": 2.0}))
            await settle(pilot)
            assert editor.plan.verdict == "fits", editor.plan.findings
            change = [line for line in editor.preview(editor.config) if line.startswith("VLLM_CPU_KVCACHE_SPACE")]
            assert change and change[0].endswith("→ 2.0"), change
            editor.query_one("#go").focus()
            await pilot.press("enter")
            await wait_for(lambda: isinstance(app.screen, RelaunchScreen), 10)
            progress = app.screen
            await wait_for(lambda: progress.done, 180)
            for step in ("drain", "stop", "start", "health", "verify"):
                assert step in progress.steps, (step, list(progress.steps))
                assert progress.steps[step][0] == "ok", (step, progress.steps[step])
            assert progress.result is not None and progress.result.plain.strip().startswith("✓"), progress.result
            # the dashboard is attached to the new tree, which runs with the new KV size
            new_pid = app.source.attached_pid
            assert new_pid is not None and new_pid != old.pid
            try:
                await wait_for(lambda: app.state.engine is not None and app.state.engine.root_pid == new_pid, 30)
            except AssertionError:
                st = app.state
                raise AssertionError(
                    f"new {new_pid} attached {app.source.attached_pid} samples {st.samples} "
                    f"latest engine {st.latest.engine.root_pid if st.latest.engine else None} degraded {st.latest.degraded}"
                ) from None
            assert _environ(new_pid)["VLLM_CPU_KVCACHE_SPACE"] == "2"
            assert app.state.engine.config.kv_cache_gib == 2.0
            await pilot.press("escape")
            await settle(pilot)
            assert not isinstance(app.screen, RelaunchScreen)
        # the journal has the run
        journal = (tmp_path / "state" / "numatop-llm" / "relaunch.jsonl").read_text()
        assert '"ok": true' in journal or '"ok":true' in journal
