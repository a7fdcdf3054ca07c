"""One full sample of the machine and (optionally) an engine, as a frozen ``Snapshot``."""

from __future__ import annotations

import os
import socket
import time
from typing import TypedDict

from numatop_llm.probes.cpuload import CpuLoadReader
from numatop_llm.probes.engine import EngineReader, NoSuchProcess
from numatop_llm.probes.models import Snapshot, Topology
from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.textio import KeptFiles, read_text
from numatop_llm.probes.topology import read_nodes_memory, read_topology


def kernel_release(roots: SysRoots) -> str:
    text = read_text(roots.proc / "sys" / "kernel" / "osrelease", quiet_missing=True)
    return text or os.uname().release


def host_name(roots: SysRoots) -> str:
    text = read_text(roots.proc / "sys" / "kernel" / "hostname", quiet_missing=True)
    return text or socket.gethostname()


#: how long a process's numa_maps may be reused while statm and vmstat say it is unchanged;
#: the TUI's sampler and the Prometheus exporter both sample with this rule
NUMA_MAPS_MAX_AGE = 30.0
#: "unchanged" allows this fraction of the process's resident pages to have come, gone or been
#: migrated since the read (at least 1 MiB): a live engine's RSS moves a little every second, and
#: without slack every sample would re-walk every page table. Per-node bytes stay within 1%.
NUMA_MAPS_TOLERANCE = 0.01
#: a read that took r seconds is not repeated within r × this factor, and the tree's reads of
#: changed memory use ≤ 1/20 = 5% of a core
NUMA_MAPS_COST_FACTOR = 20.0
#: and the safety-net re-reads of unchanged memory (older than the max age) use ≤ 1% of a core
NUMA_MAPS_IDLE_FACTOR = 100.0


#: the sampling cadence rule shared by the TUI's sampler and the exporter
class Cadence(TypedDict):
    numa_maps_max_age: float
    numa_maps_cost_factor: float
    numa_maps_tolerance: float
    numa_maps_idle_factor: float


CADENCE: Cadence = {
    "numa_maps_max_age": NUMA_MAPS_MAX_AGE,
    "numa_maps_cost_factor": NUMA_MAPS_COST_FACTOR,
    "numa_maps_tolerance": NUMA_MAPS_TOLERANCE,
    "numa_maps_idle_factor": NUMA_MAPS_IDLE_FACTOR,
}


class SnapshotReader:
    """Takes snapshots repeatedly: topology once (refreshed on demand), node memory every time.

    Node totals are re-read on every sample: some kernels online memory lazily, so a node's
    MemTotal grows while the engine runs.
    """

    def __init__(self, roots: SysRoots, pid: int | None = None) -> None:
        self.roots = roots
        self.topology: Topology = read_topology(roots)
        self.engine_reader = EngineReader(roots, pid) if pid is not None else None
        #: node meminfo/numastat and /proc/stat, kept open between samples
        self.files = KeptFiles(limit=256)
        self.cpu_load = CpuLoadReader(roots, self.files)
        self.host = host_name(roots)
        self.kernel = kernel_release(roots)

    def attach(self, pid: int | None) -> None:
        if self.engine_reader is not None:
            self.engine_reader.close()
        self.engine_reader = EngineReader(self.roots, pid) if pid is not None else None

    def close(self) -> None:
        """Release every kept descriptor (the engine's and the machine's)."""
        self.attach(None)
        self.files.close()

    def refresh_topology(self) -> None:
        self.topology = read_topology(self.roots)

    def read(
        self,
        *,
        numa_maps_max_age: float = 0.0,
        numa_maps_cost_factor: float = 0.0,
        numa_maps_tolerance: float = 0.0,
        numa_maps_idle_factor: float | None = None,
        late_seconds: float = 0.0,
        oom_kills: tuple = (),
    ) -> Snapshot:
        """One sample. A vanished engine is not an error: the snapshot says so in ``degraded``."""
        t0 = time.perf_counter()
        mem, problems = read_nodes_memory(self.roots, self.topology.node_ids, self.files)
        nodes = tuple(n.model_copy(update={"memory": mem.get(n.id, n.memory)}) for n in self.topology.nodes)
        topo = self.topology.model_copy(update={"nodes": nodes})
        degraded = list(topo.degraded) + problems
        busy = self.cpu_load.read()
        engine = None
        if self.engine_reader is not None:
            try:
                engine = self.engine_reader.read(
                    topo.cpu_to_node(),
                    numa_maps_max_age=numa_maps_max_age,
                    numa_maps_cost_factor=numa_maps_cost_factor,
                    numa_maps_tolerance=numa_maps_tolerance,
                    numa_maps_idle_factor=numa_maps_idle_factor,
                )
            except NoSuchProcess as exc:
                degraded.append(f"process {exc.args[0]} exited")
            for p in engine.processes if engine else ():
                degraded.extend(f"{p.pid}: {d}" for d in p.degraded if "exited" not in d)
        return Snapshot(
            taken_at=time.time(),
            host=self.host,
            kernel=self.kernel,
            topology=topo,
            engine=engine,
            sample_seconds=time.perf_counter() - t0,
            late_seconds=late_seconds,
            oom_kills=tuple(oom_kills),
            cpu_busy=busy,
            degraded=tuple(dict.fromkeys(degraded)),
        )
