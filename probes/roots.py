"""Where the readers look: the procfs and sysfs roots (real ones, fixture trees or a guest's)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SysRoots:
    """The two filesystem roots every reader takes, so tests can point them at fixture trees."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")

    @classmethod
    def at(cls, proc: str | Path | None = None, sys: str | Path | None = None) -> SysRoots:
        return cls(proc=Path(proc) if proc else Path("/proc"), sys=Path(sys) if sys else Path("/sys"))

    @property
    def node_dir(self) -> Path:
        return self.sys / "devices" / "system" / "node"

    @property
    def cpu_dir(self) -> Path:
        return self.sys / "devices" / "system" / "cpu"

    @property
    def cgroup_dir(self) -> Path:
        return self.sys / "fs" / "cgroup"


LIVE = SysRoots()
