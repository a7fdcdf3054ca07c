"""Boot QEMU guests with real multi-NUMA kernels and run shell commands in them.

A guest boots the cached Debian kernel and busybox initramfs (``tests/vm/build.sh``) with a
layout from ``layouts.py``. Its init mounts this machine's root read-only over virtio-9p (with a
tmpfs overlay, fresh /proc, /sys, /dev, /tmp) and a per-guest shared directory at ``/vmshare``,
then serves commands from that directory until told to power off. So one boot serves many
commands: ``NumaVm.run(layout, command)`` boots the layout on first use and reuses it.

Run by hand: ``python -m tests.vm.harness seed8 'numactl --hardware'``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.vm.layouts import LAYOUTS, Layout

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD_SH = HERE / "build.sh"
#: how long a boot may take before the guest counts as hung (TCG on a busy 2-core machine)
BOOT_TIMEOUT = 180.0


def cache_dir() -> Path:
    return Path(os.environ.get("NUMATOP_CACHE") or Path.home() / ".cache" / "numatop-llm") / "vm"


@dataclass(frozen=True)
class Artifacts:
    kernel: Path
    initramfs: Path
    kernel_version: str
    qemu: str

    @classmethod
    def find(cls, cache: Path | None = None) -> Artifacts | None:
        """The built kernel, initramfs and QEMU binary, or None when something is missing."""
        cache = cache or cache_dir()
        qemu = shutil.which("qemu-system-x86_64")
        kernel, initramfs, ver = cache / "vmlinuz", cache / "initramfs.cpio.gz", cache / "kernel-version"
        if not (qemu and kernel.is_file() and initramfs.is_file() and ver.is_file()):
            return None
        return cls(kernel=kernel, initramfs=initramfs, kernel_version=ver.read_text().strip(), qemu=qemu)


def build(timeout: float = 900.0) -> tuple[Artifacts | None, str]:
    """Run build.sh (idempotent); returns the artifacts (None on failure) and its output."""
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SH)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"build.sh: {exc}"
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0:
        return None, f"build.sh exited {out.returncode}: {text[-2000:]}"
    return Artifacts.find(), text


@dataclass(frozen=True)
class GuestResult:
    """What one command did inside a guest."""

    stdout: str
    stderr: str
    returncode: int
    #: seconds from starting QEMU until the guest served commands (the same for every command of a boot)
    boot_seconds: float
    #: wall-clock seconds the command took, seen from the host
    seconds: float = 0.0
    layout: str = ""

    def check(self) -> GuestResult:
        """This result, or an AssertionError carrying the command's output when it failed."""
        if self.returncode != 0:
            raise AssertionError(
                f"guest command failed in {self.layout} with exit code {self.returncode}\n"
                f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
            )
        return self


class VmError(RuntimeError):
    """The guest did not boot, died, or stopped answering."""


def _accel() -> list[str]:
    """TCG by default (the same everywhere; nested /dev/kvm is often present but broken);
    ``NUMATOP_VM_ACCEL=kvm`` opts in to KVM.

    One TCG thread for all vCPUs: on a 2-core host, 16 vCPUs boot in 7-11 s against 16-22 s
    multi-threaded, and touching memory (what these tests do most) is faster; the 4-vCPU guest
    is as fast either way. ``NUMATOP_VM_TCG_THREAD=multi`` overrides.
    """
    if os.environ.get("NUMATOP_VM_ACCEL") == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    mode = os.environ.get("NUMATOP_VM_TCG_THREAD") or "single"
    return ["-accel", f"tcg,thread={mode}", "-cpu", "max"]


class Guest:
    """One running QEMU guest with one layout; commands go through its shared directory."""

    def __init__(self, layout: Layout, artifacts: Artifacts, workdir: Path) -> None:
        self.layout = layout
        self.artifacts = artifacts
        self.workdir = workdir
        self.share = workdir / "share"
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.boot_seconds: float | None = None
        self.next_cmd = 1

    def qemu_command(self) -> list[str]:
        accel = _accel()
        return [
            self.artifacts.qemu,
            "-machine",
            "q35",
            *accel,
            *self.layout.qemu_args(),
            "-kernel",
            str(self.artifacts.kernel),
            "-initrd",
            str(self.artifacts.initramfs),
            "-append",
            "console=ttyS0 loglevel=4 panic=-1 mitigations=off",
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            f"file:{self.console}",
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={self.share},mount_tag=vmshare,security_model=none",
        ]

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what: str) -> VmError:
        self.kill()
        return VmError(f"{self.layout.name} guest: {what}\n--- console (last lines)\n{self.console_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def boot(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Start QEMU and wait until the guest serves commands; returns the boot time in seconds."""
        self.share.mkdir(parents=True, exist_ok=True)
        # the guest mounts a fresh /tmp: a checkout living under /tmp is bound back by its init
        (self.share / "keep").write_text(f"{REPO}\n")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.qemu_command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "qemu.err").open("wb"),
        )
        ready = self.share / "ready"
        while not ready.exists():
            if (self.share / "init-failed").exists():
                raise self._fail("init failed: " + (self.share / "init-failed").read_text().strip())
            if self.proc.poll() is not None:
                err = (self.workdir / "qemu.err").read_text(errors="replace").strip()
                raise self._fail(f"QEMU exited with {self.proc.returncode} while booting: {err[-1500:]}")
            if time.monotonic() - t0 > timeout:
                raise self._fail(f"not ready after {timeout:.0f} s")
            time.sleep(0.05)
        self.boot_seconds = time.monotonic() - t0
        return self.boot_seconds

    def run(self, command: str, timeout: float = 120.0) -> GuestResult:
        """Run ``command`` with /bin/sh in the guest (cwd: the repository), at most ``timeout`` seconds.

        The guest kills the command when the time is up (exit code 124, or 137 after SIGKILL).
        """
        if not self.alive():
            raise VmError(f"{self.layout.name} guest is not running")
        n = self.next_cmd
        self.next_cmd += 1
        script = f"cd {shlex.quote(str(REPO))} || exit 99\n{command}\n"
        (self.share / f"{n}.timeout").write_text(f"{max(1, int(timeout))}\n")
        tmp = self.share / f".{n}.cmd"
        tmp.write_text(script)
        t0 = time.monotonic()
        tmp.rename(self.share / f"{n}.cmd")
        rc_file = self.share / f"{n}.rc"
        while not rc_file.exists():
            if not self.alive():
                raise self._fail(f"QEMU died while running: {command[:200]}")
            if time.monotonic() - t0 > timeout + 30:
                raise self._fail(f"no answer {timeout + 30:.0f} s after: {command[:200]}")
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        rc = int(rc_file.read_text().strip() or -1)
        return GuestResult(
            stdout=(self.share / f"{n}.out").read_text(errors="replace"),
            stderr=(self.share / f"{n}.err").read_text(errors="replace"),
            returncode=rc,
            boot_seconds=self.boot_seconds or 0.0,
            seconds=seconds,
            layout=self.layout.name,
        )

    def poweroff(self, timeout: float = 30.0) -> None:
        """Ask the guest to power off; kill QEMU when it does not within ``timeout``."""
        if self.proc is None:
            return
        if self.alive():
            (self.share / "poweroff").write_text("")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class NumaVm:
    """Guests by layout name, booted on first use and kept for later commands.

    At most ``max_alive`` guests run at once (default 1: the 8-node guest alone may hold 4 GiB of
    host memory after the OOM tests); booting another layout powers the others off first, so
    tests should use one layout after the other (a layout used again is booted again).
    """

    def __init__(self, artifacts: Artifacts, basedir: Path | None = None, max_alive: int = 1) -> None:
        self.artifacts = artifacts
        self.basedir = basedir or Path(tempfile.mkdtemp(prefix="numatop-vm-"))
        self.max_alive = max(1, max_alive)
        self.guests: dict[str, Guest] = {}
        #: every boot's time, per layout (a guest that died is booted again)
        self.boot_times: dict[str, list[float]] = {}
        #: (layout, seconds) of every command, in order
        self.command_times: list[tuple[str, float]] = []

    def guest(self, layout: str) -> Guest:
        """The running guest for ``layout``, booting it when needed."""
        g = self.guests.get(layout)
        if g is not None and g.alive():
            return g
        if layout not in LAYOUTS:
            raise KeyError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        alive = [name for name, other in self.guests.items() if other.alive()]
        for name in alive[: max(0, len(alive) - self.max_alive + 1)]:
            self.guests[name].poweroff()
        boot_no = len(self.boot_times.get(layout, [])) + 1
        workdir = self.basedir / f"{layout}-{boot_no}"
        workdir.mkdir(parents=True)
        g = Guest(LAYOUTS[layout], self.artifacts, workdir)
        self.guests[layout] = g
        secs = g.boot()
        self.boot_times.setdefault(layout, []).append(secs)
        return g

    def run(self, layout: str, command: str, timeout: float = 120.0) -> GuestResult:
        """Run ``command`` in the ``layout`` guest (see ``Guest.run``)."""
        res = self.guest(layout).run(command, timeout)
        self.command_times.append((layout, round(res.seconds, 2)))
        return res

    def close(self) -> None:
        for g in self.guests.values():
            g.poweroff()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m tests.vm.harness LAYOUT COMMAND...", file=sys.stderr)
        return 2
    arts = Artifacts.find()
    if arts is None:
        arts, out = build()
        if arts is None:
            print(out, file=sys.stderr)
            return 1
    vm = NumaVm(arts)
    try:
        res = vm.run(argv[0], " ".join(argv[1:]), timeout=600)
    finally:
        vm.close()
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    print(f"[boot {res.boot_seconds:.1f} s, command {res.seconds:.1f} s, exit {res.returncode}]", file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
