"""Pytest fixtures for the QEMU guest tests: ``numa_vm``, one factory for the whole session.

Import it into a test module (``from tests.vm.fixtures import numa_vm``). ``numa_vm.run(layout,
command, timeout)`` boots ``layout`` on first use (one boot per layout per session) and returns a
``GuestResult``. The build (tests/vm/build.sh) runs once per session; when QEMU cannot be
installed the tests skip, except in CI (env CI set), where they fail.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from tests.vm.harness import NumaVm, build, cache_dir

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def numa_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NumaVm]:
    t0 = time.monotonic()
    artifacts, output = build()
    if artifacts is None:
        msg = f"cannot build the QEMU guest: {output}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    vm = NumaVm(artifacts, tmp_path_factory.mktemp("numa-vm"))
    try:
        yield vm
    finally:
        vm.close()
        summary = {
            "finished_at": time.time(),
            "kernel": artifacts.kernel_version,
            "boot_seconds": vm.boot_times,
            "session_seconds": round(time.monotonic() - t0, 1),
        }
        try:  # a record of the last session's boot times, for the CI log and the closing note
            (cache_dir() / "last-session.json").write_text(json.dumps(summary, indent=1) + "\n")
        except OSError:
            pass
