"""The installed package: one import root (numatop_llm), its data files, its version from one place."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("numatop_llm-*.whl")
    return whl


def test_wheel_has_one_import_root_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"numatop_llm"}
    assert "numatop_llm/data/demo.jsonl.gz" in names
    assert "numatop_llm/data/models/DeepSeek-R1-Distill-Qwen-32B/config.json" in names
    assert "numatop_llm/dashboard/dashboard.tcss" in names
    assert any(n.startswith("numatop_llm/probes/") for n in names)
    assert any(n.startswith("numatop_llm/widgets/") for n in names)


def test_installed_package_runs_and_leaves_no_app_module(wheel, tmp_path):
    target = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (target / "app").exists() and not (target / "probes").exists() and not (target / "widgets").exists()
    # -S: no site processing, so this checkout's editable hook is not loaded; deps come from the venv
    import textual

    deps = str(Path(textual.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{deps}"}
    run = lambda code: subprocess.run(  # noqa: E731
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    r = run("import app")
    assert r.returncode != 0 and "No module named 'app'" in r.stderr
    r = run("import sys; from numatop_llm.commands.cli import main; sys.exit(main(['plan', '--demo', '--tp', '4']))")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fits" in r.stdout
    r = run("import numatop_llm, importlib.metadata as m; print(numatop_llm.__version__)")
    assert r.returncode == 0 and r.stdout.strip()
