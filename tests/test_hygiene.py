"""Layering rules: probes, planner and launcher never import Textual; secrets never leak."""

from __future__ import annotations

import subprocess
import sys

import pytest

from numatop_llm.probes.process import relevant_env
from numatop_llm.probes.secrets import mask_argv, mask_env

NO_TEXTUAL = [
    "numatop_llm.probes",
    "numatop_llm.probes.snapshot",
    "numatop_llm.probes.engine",
    "numatop_llm.commands.cli",
    "numatop_llm.report",
    "numatop_llm.demo.seedbox",
]


@pytest.mark.parametrize(
    "module", [*NO_TEXTUAL, "numatop_llm.planner", "numatop_llm.launcher", "numatop_llm.commands.plan"]
)
def test_module_does_not_import_textual(module):
    code = (
        "import importlib, sys\n"
        f"try:\n    importlib.import_module({module!r})\n"
        "except ModuleNotFoundError as e:\n"
        f"    print('absent' if e.name == {module!r} else 'broken:' + str(e)); raise SystemExit\n"
        "print('textual' if any(m == 'textual' or m.startswith('textual.') for m in sys.modules) else 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = out.stdout.strip()
    if result == "absent":
        pytest.skip(f"{module} does not exist yet")
    assert result == "clean", f"{module}: {result}"


def test_secrets_masked_in_env_and_argv():
    env = {"HF_TOKEN": "hf_abc", "OPENAI_API_KEY": "sk-1", "DB_PASSWORD": "pw", "VLLM_CPU_KVCACHE_SPACE": "4"}
    masked = mask_env(env)
    assert masked["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert "hf_abc" not in str(masked) and "sk-1" not in str(masked) and "pw" not in masked.values()
    assert relevant_env(env) == {"HF_TOKEN": "****", "VLLM_CPU_KVCACHE_SPACE": "4"}
    argv = mask_argv(["vllm", "serve", "m", "--api-key", "s3cret", "--hf-token=hf_x", "--port", "8000"])
    assert "s3cret" not in argv and "hf_x" not in " ".join(argv)
    assert argv[-2:] == ["--port", "8000"]


def test_secret_in_a_real_process_never_reaches_snapshot_output():
    """A process started with HF_TOKEN in its environment and --api-key on its command line."""
    import json
    import os

    env = dict(os.environ, HF_TOKEN="hf_supersecret", VLLM_CPU_KVCACHE_SPACE="3")
    code = "import time; time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code, "vllm", "serve", "m", "--api-key", "sk-topsecret"], env=env)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "numatop_llm", "snapshot", "--json", "--pid", str(p.pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "hf_supersecret" not in out.stdout and "sk-topsecret" not in out.stdout
        proc = json.loads(out.stdout)["processes"][0]
        assert proc["env"]["HF_TOKEN"] == "****"
        assert proc["env"]["VLLM_CPU_KVCACHE_SPACE"] == "3"
        text = subprocess.run(
            [sys.executable, "-m", "numatop_llm", "snapshot", "--pid", str(p.pid)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "hf_supersecret" not in text and "sk-topsecret" not in text
    finally:
        p.kill()
        p.wait(timeout=10)
