"""Per-CPU busy share from ``/proc/stat``: one file, one read per sample, deltas between samples."""

from __future__ import annotations

from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.textio import KeptFiles, Problems, read_text


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """``{cpu: (busy_ticks, total_ticks)}`` from the ``cpuN`` lines; malformed lines are skipped."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        parts = line.split()
        name = parts[0][3:]
        if not name.isdigit() or len(parts) < 5:
            continue
        try:
            vals = [int(v) for v in parts[1:]]
        except ValueError:
            continue
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        total = sum(vals[:8])  # guest time is already counted in user/nice
        out[int(name)] = (total - idle, total)
    return out


class CpuLoadReader:
    """Busy percent of each CPU since the previous ``read()`` (empty on the first call)."""

    def __init__(self, roots: SysRoots, files: KeptFiles | None = None) -> None:
        self.path = roots.proc / "stat"
        self.files = files
        self._prev: dict[int, tuple[int, int]] = {}

    def read(self, problems: Problems | None = None) -> dict[int, float]:
        text = read_text(self.path, problems, quiet_missing=True, files=self.files)
        if text is None:
            return {}
        now = parse_proc_stat(text)
        out: dict[int, float] = {}
        for cpu, (busy, total) in now.items():
            prev = self._prev.get(cpu)
            if prev is None or total <= prev[1]:
                continue
            out[cpu] = round(max(0.0, min(100.0, 100.0 * (busy - prev[0]) / (total - prev[1]))), 1)
        self._prev = now
        return out
