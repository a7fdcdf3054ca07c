"""Frozen snapshot models: the only shape in which machine state leaves ``probes``.

Every snapshot carries ``degraded``: one-line reasons for what could not be read (permission
denied, PID gone, file missing or garbled). Readers fill it instead of raising.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from numatop_llm.probes.kernel_log import OomKill


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cpu(Frozen):
    """One logical CPU."""

    id: int
    online: bool = True
    node: int | None = None
    package: int | None = None
    core_id: int | None = None
    #: CPUs sharing this CPU's physical core (SMT siblings, itself included)
    siblings: tuple[int, ...] = ()


class NodeMemory(Frozen):
    """One node's ``meminfo`` and ``numastat`` (bytes; counters as the kernel gives them)."""

    total_bytes: int = 0
    free_bytes: int = 0
    used_bytes: int = 0
    file_bytes: int = 0
    anon_bytes: int = 0
    shmem_bytes: int = 0
    active_file_bytes: int = 0
    inactive_file_bytes: int = 0
    sreclaimable_bytes: int = 0
    #: hugepage pools of every size on this node (bytes)
    hugepages_total_bytes: int = 0
    hugepages_free_bytes: int = 0
    numastat: dict[str, int] = Field(default_factory=dict)

    @property
    def vllm_available_bytes(self) -> int:
        """What vLLM 0.32 calls a node's available memory: free + file LRU + reclaimable slab."""
        return self.free_bytes + self.active_file_bytes + self.inactive_file_bytes + self.sreclaimable_bytes

    @classmethod
    def byte_fields(cls) -> tuple[str, ...]:
        """The byte counters (every field but ``numastat``): what scales when memory is summed or scaled."""
        return tuple(name for name, f in cls.model_fields.items() if f.annotation is int)


class Node(Frozen):
    """One NUMA node."""

    id: int
    #: the node's online CPUs
    cpus: tuple[int, ...] = ()
    #: what the node's own cpulist/cpumap names, offline CPUs included
    cpulist_all: tuple[int, ...] = ()
    #: distance to each node id; empty when the kernel's row does not line up with the node list
    distances: dict[int, int] = Field(default_factory=dict)
    memory: NodeMemory | None = None
    package: int | None = None

    @property
    def total_bytes(self) -> int | None:
        return self.memory.total_bytes if self.memory else None

    @property
    def free_bytes(self) -> int | None:
        return self.memory.free_bytes if self.memory else None


class Package(Frozen):
    """A socket (``physical_package_id``) and its online CPUs."""

    id: int
    cpus: tuple[int, ...] = ()
    nodes: tuple[int, ...] = ()


class Topology(Frozen):
    """The machine's NUMA topology and per-node memory at one moment."""

    nodes: tuple[Node, ...] = ()
    cpus: tuple[Cpu, ...] = ()
    packages: tuple[Package, ...] = ()
    cpus_online: tuple[int, ...] = ()
    cpus_offline: tuple[int, ...] = ()
    #: MemTotal of /proc/meminfo (may disagree with the sum of node totals)
    system_mem_total_bytes: int | None = None
    system_mem_available_bytes: int | None = None
    page_size_bytes: int = 4096
    degraded: tuple[str, ...] = ()

    def node(self, node_id: int) -> Node | None:
        for n in self.nodes:
            if n.id == node_id:
                return n
        return None

    def cpu_to_node(self) -> dict[int, int]:
        return {c.id: c.node for c in self.cpus if c.node is not None}

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(n.id for n in self.nodes)

    @property
    def num_cores(self) -> int:
        return len({(c.package, c.siblings or (c.id,)) for c in self.cpus if c.online})


class Role(StrEnum):
    API_SERVER = "api_server"
    ENGINE_CORE = "engine_core"
    WORKER = "worker"
    OTHER = "other"


class PolicyMode(StrEnum):
    """The kernel's memory policy modes, in numactl's words (numa_maps spells two of them apart)."""

    DEFAULT = "default"
    BIND = "bind"
    INTERLEAVE = "interleave"
    PREFER = "prefer"
    PREFERRED_MANY = "preferred-many"
    WEIGHTED_INTERLEAVE = "weighted-interleave"
    LOCAL = "local"
    #: a word this version does not know (a newer kernel): shown as read, never guessed at
    OTHER = "other"

    @classmethod
    def _missing_(cls, value: object) -> PolicyMode:
        return cls.OTHER


class Policy(Frozen):
    """A memory policy as numa_maps shows it, reduced to what matters for placement."""

    mode: PolicyMode = PolicyMode.DEFAULT
    nodes: tuple[int, ...] = ()
    #: the raw word, e.g. ``bind:0`` or ``interleave:0-3``
    text: str = "default"

    @property
    def strict(self) -> bool:
        return self.mode == "bind"


class NumaMaps(Frozen):
    """Per-node bytes of one process from ``/proc/PID/numa_maps``, split by kind."""

    node_bytes: dict[int, int] = Field(default_factory=dict)
    anon_bytes: dict[int, int] = Field(default_factory=dict)
    file_bytes: dict[int, int] = Field(default_factory=dict)
    shm_bytes: dict[int, int] = Field(default_factory=dict)
    huge_bytes: dict[int, int] = Field(default_factory=dict)
    #: bytes resident under each policy word (``default``, ``bind:0`` …)
    policy_bytes: dict[str, int] = Field(default_factory=dict)
    #: the policy holding most resident bytes, ignoring ``default`` when another one exists
    policy: Policy = Policy()
    read_seconds: float = 0.0


class Thread(Frozen):
    """One thread's placement: last CPU, its node, allowed CPUs, CPU use."""

    tid: int
    comm: str = ""
    state: str = "?"
    cpu: int | None = None
    node: int | None = None
    allowed_cpus: tuple[int, ...] = ()
    utime_ticks: int = 0
    stime_ticks: int = 0
    starttime: int = 0
    #: percent of one CPU since the previous sample (None on the first sample)
    cpu_percent: float | None = None


class Cgroup(Frozen):
    """cgroup v2 limits and usage of a process's cgroup."""

    path: str = ""
    memory_max: int | None = None
    memory_current: int | None = None
    oom_events: int = 0
    oom_kill_events: int = 0
    cpus_effective: tuple[int, ...] = ()
    mems_effective: tuple[int, ...] = ()
    #: per-node bytes from memory.numa_stat (anon + file) where present
    numa_node_bytes: dict[int, int] = Field(default_factory=dict)


class Process(Frozen):
    """One process of an engine tree (or any process attached by PID)."""

    pid: int
    ppid: int | None = None
    comm: str = ""
    cmdline: tuple[str, ...] = ()
    role: Role = Role.OTHER
    #: global rank (pp_rank × TP + tp_rank) for workers, None otherwise
    rank: int | None = None
    #: vLLM's own label for a worker, e.g. ``Worker_TP1`` or ``Worker_PP1_TP0``
    label: str | None = None
    tp_rank: int | None = None
    pp_rank: int | None = None
    exe: str | None = None
    cwd: str | None = None
    uid: int | None = None
    user: str | None = None
    starttime: int = 0
    rss_bytes: int = 0
    #: resident bytes per node (from numa_maps, else cgroup numa_stat)
    node_bytes: dict[int, int] = Field(default_factory=dict)
    numa_maps: NumaMaps | None = None
    policy: Policy = Policy()
    cpus_allowed: tuple[int, ...] = ()
    mems_allowed: tuple[int, ...] = ()
    threads: tuple[Thread, ...] = ()
    #: environment (only VLLM_*, OMP_*, GOMP_*, KMP_*, … names), secrets masked
    env: dict[str, str] = Field(default_factory=dict)
    cgroup: Cgroup | None = None
    degraded: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        """What to call the process on screen and in findings: its vLLM label, else its role, else comm."""
        if self.label:
            return self.label
        return {Role.API_SERVER: "API server", Role.ENGINE_CORE: "EngineCore"}.get(
            self.role, self.comm or f"pid {self.pid}"
        )

    @property
    def home_node(self) -> int | None:
        """The node this process belongs on: its strict single-node bind, else where most threads run.

        This is the one definition used by diagnoses, the exporter and the planner's comparisons.
        """
        if self.policy.mode in ("bind", "prefer") and len(self.policy.nodes) == 1:
            return self.policy.nodes[0]
        counts = self.thread_nodes
        if not counts:
            return None
        return max(sorted(counts), key=lambda n: counts[n])

    @property
    def off_node_threads(self) -> int:
        """Threads whose last CPU is on another node than ``home_node``."""
        home = self.home_node
        if home is None:
            return 0
        return sum(1 for t in self.threads if t.node is not None and t.node != home)

    @property
    def remote_bytes(self) -> int:
        """Resident bytes on nodes other than ``home_node``."""
        home = self.home_node
        if home is None:
            return 0
        return sum(b for n, b in self.node_bytes.items() if n != home)

    @property
    def thread_nodes(self) -> dict[int, int]:
        """How many threads last ran on each node."""
        out: dict[int, int] = {}
        for t in self.threads:
            if t.node is not None:
                out[t.node] = out.get(t.node, 0) + 1
        return out


class EngineConfig(Frozen):
    """What the engine was started with, read from the API server's argv and environ."""

    model: str | None = None
    served_name: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    dtype: str | None = None
    gpu_memory_utilization: float | None = None
    host: str | None = None
    port: int | None = None
    kv_cache_gib: float | None = None
    omp_threads_bind: str | None = None
    reserved_cpus: int | None = None
    argv: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    vllm_version: str | None = None


class Engine(Frozen):
    """A vLLM engine: its process tree and configuration."""

    root_pid: int
    processes: tuple[Process, ...] = ()
    config: EngineConfig = EngineConfig()
    is_vllm: bool = True

    def workers(self) -> list[Process]:
        return [p for p in self.processes if p.role == Role.WORKER]

    def by_role(self, role: Role) -> list[Process]:
        return [p for p in self.processes if p.role == role]


class Snapshot(Frozen):
    """Everything one sample knows: topology with node memory, and the attached engine."""

    taken_at: float
    host: str = ""
    kernel: str = ""
    topology: Topology
    engine: Engine | None = None
    #: wall seconds the sample took, and how late it started against its deadline
    sample_seconds: float = 0.0
    late_seconds: float = 0.0
    #: OOM kills the kernel reported since the previous sample (any process; match pids to the engine)
    oom_kills: tuple[OomKill, ...] = ()
    #: busy percent of each CPU since the previous sample (from /proc/stat; empty on the first)
    cpu_busy: dict[int, float] = Field(default_factory=dict)
    degraded: tuple[str, ...] = ()
