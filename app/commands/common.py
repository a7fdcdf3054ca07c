"""What every subcommand shares: exit codes, the one-line usage error, and root/PID checks.

Command modules import from here, never from :mod:`numatop_llm.commands.cli` (which imports
them), so the package has no import cycle.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from numatop_llm.probes.roots import SysRoots

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (and a pointer to --help) on bad arguments."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def roots_from(args: argparse.Namespace) -> SysRoots:
    """The /proc and /sys roots named by ``--proc``/``--sys`` (defaults: this machine), checked."""
    roots = SysRoots.at(getattr(args, "proc", None), getattr(args, "sys", None))
    if not (roots.sys / "devices" / "system" / "cpu").is_dir():
        raise UsageError(f"{roots.sys} is not a sysfs tree (no devices/system/cpu)")
    if not roots.proc.is_dir():
        raise UsageError(f"{roots.proc} is not a directory")
    return roots


def check_pid(roots: SysRoots, pid: int | None) -> None:
    """Refuse a PID that names no process under ``roots``."""
    if pid is None:
        return
    if pid <= 0 or not (roots.proc / str(pid)).is_dir():
        raise UsageError(f"no such process: {pid}")


def add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proc", metavar="DIR", help="procfs root (default /proc)")
    p.add_argument("--sys", metavar="DIR", help="sysfs root (default /sys)")
