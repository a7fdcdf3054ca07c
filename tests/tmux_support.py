"""A real terminal for tests: a detached tmux session of a given size, keys in, pane text out."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

IN_CI = bool(os.environ.get("CI"))


def require_tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        if IN_CI:
            pytest.fail("tmux is not installed (tests/run.sh installs it)")
        pytest.skip("tmux not installed")
    return path


class Tmux:
    """One detached session running ``command``; the command's exit code is kept in the pane."""

    def __init__(self, command: str, width: int = 100, height: int = 30, env: dict[str, str] | None = None) -> None:
        self.tmux = require_tmux()
        self.name = f"numatop-test-{uuid.uuid4().hex[:8]}"
        self.socket = self.name  # one server per session: no race with a previous test's shutdown
        environ = {**os.environ, "TERM": "xterm-256color", "TZ": "UTC", **(env or {})}
        environ.pop("TMUX", None)
        wrapped = f'{command}; echo "[exited rc=$?]"; sleep 600'
        subprocess.run(
            [
                self.tmux,
                "-L",
                self.socket,
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(width),
                "-y",
                str(height),
                wrapped,
            ],
            check=True,
            env=environ,
            timeout=20,
        )

    def capture(self, escapes: bool = False) -> str:
        """The pane's text; with ``escapes`` also its colours and attributes (SGR sequences)."""
        args = [self.tmux, "-L", self.socket, "capture-pane", "-p", "-t", self.name] + (["-e"] if escapes else [])
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout

    def send(self, *keys: str) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "send-keys", "-t", self.name, *keys], check=True, timeout=20)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.25)
        raise AssertionError(f"{text!r} did not appear within {timeout:g} s; the pane shows:\n{screen}")

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=20)

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
