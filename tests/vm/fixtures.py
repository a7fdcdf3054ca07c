"""Pytest fixtures for the QEMU guest tests: ``numa_vm``, one factory for the whole session.

Import it into a test module (``from tests.vm.fixtures import numa_vm``). ``numa_vm.run(layout,
command, timeout)`` boots ``layout`` on first use (one boot per layout per session) and returns a
``GuestResult``. The build (tests/vm/build.sh) runs once per session; when QEMU cannot be
installed the tests skip, except in CI (env CI set), where they fail.

Pytest makes a separate fixture of every module's import, so all of them share one ``NumaVm``
(and one build) kept here; the first to be torn down at the end of the session powers the
guests off and writes the session's boot times to ``<cache>/vm/last-session.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.vm.harness import NumaVm, build, cache_dir

IN_CI = bool(os.environ.get("CI"))
_shared: dict[str, object] = {}


def _vm(tmp_path_factory: pytest.TempPathFactory) -> NumaVm:
    if "error" in _shared:
        _unavailable(str(_shared["error"]))
    if "vm" not in _shared:
        _shared["started"] = time.monotonic()
        artifacts, output = build()
        if artifacts is None:
            _shared["error"] = f"cannot build the QEMU guest: {output}"
            _unavailable(str(_shared["error"]))
        _shared["vm"] = NumaVm(artifacts, tmp_path_factory.mktemp("numa-vm"))
    vm = _shared["vm"]
    assert isinstance(vm, NumaVm)
    return vm


def _unavailable(msg: str) -> None:
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def _close() -> None:
    vm = _shared.pop("vm", None)
    if not isinstance(vm, NumaVm):
        return
    vm.close()
    summary = {
        "finished_at": time.time(),
        "kernel": vm.artifacts.kernel_version,
        "boot_seconds": vm.boot_times,
        "commands": vm.command_times,
        "session_seconds": round(time.monotonic() - float(_shared.get("started") or 0), 1),
    }
    try:  # a record of the last session's boot times, for the CI log and the closing note
        (cache_dir() / "last-session.json").write_text(json.dumps(summary, indent=1) + "\n")
    except OSError:
        pass


@pytest.fixture(scope="session")
def numa_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NumaVm]:
    vm = _vm(tmp_path_factory)
    try:
        yield vm
    finally:
        _close()
