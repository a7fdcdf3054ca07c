"""Helpers for the exporter tests: a vLLM-shaped process tree, the exporter as a process, a real Prometheus.

``VllmShapedTree`` starts real processes laid out like a vLLM CPU engine at TP=N: an API server
(``python …/vllm serve MODEL --tensor-parallel-size N``, with ``VLLM_CPU_*`` in its environ), a
``VLLM::EngineCore`` child and ``VLLM::Worker_TP<i>`` grandchildren started under ``numactl
--membind=<node> --physcpubind=<cpu>`` that touch real memory and run real threads. It stands in
for the real engine while developing (and on machines without the vLLM testbed); the real-engine
tests use the testbed fixtures.

Everything is bounded in time: each process exits after ``lifetime`` seconds or when its parent
dies, and the context managers stop what they started by PID.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from numatop_llm.probes.roots import SysRoots
from numatop_llm.probes.topology import read_topology

REPO = Path(__file__).resolve().parent.parent

API = r"""
import os, subprocess, sys, time
engine_code, worker_code, spec = sys.argv[-3], sys.argv[-2], sys.argv[-1]
lifetime = float(os.environ["SHAPED_LIFETIME"])
core = subprocess.Popen(["bash", "-c", 'exec -a VLLM::EngineCore "$0" -c "$1" "$2" "$3"',
                         sys.executable, engine_code, worker_code, spec], stdout=subprocess.PIPE, text=True)
line = core.stdout.readline().strip()
print(line, flush=True)
deadline = time.time() + lifetime
while time.time() < deadline and core.poll() is None:
    time.sleep(0.2)
core.terminate()
"""

ENGINE = r"""
import json, os, subprocess, sys, time
worker_code, spec = sys.argv[1], json.loads(sys.argv[2])
ppid = os.getppid()
kids = []
for i, w in enumerate(spec["workers"]):
    cmd = [spec["numactl"], f"--membind={w['node']}", f"--physcpubind={w['cpu']}", "--",
           "bash", "-c", f'exec -a VLLM::Worker_TP{i} "$0" -c "$1" "$2" "$3" "$4" "$5"',
           spec["python"], worker_code, str(spec["mib"]), str(spec["threads"]), str(spec["lifetime"]), str(os.getpid())]
    kids.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
pids = []
for k in kids:
    line = k.stdout.readline().strip()
    pids.append(int(line.split()[1]) if line.startswith("ready") else -1)
print("ready " + json.dumps({"engine": os.getpid(), "workers": pids}), flush=True)
deadline = time.time() + spec["lifetime"]
while time.time() < deadline and os.getppid() == ppid:
    time.sleep(0.2)
for k in kids:
    k.terminate()
"""

WORKER = r"""
import os, signal, sys, threading, time
mib, threads, lifetime, ppid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
buf = bytearray(mib * 2**20)
for i in range(0, len(buf), 4096):
    buf[i] = 1
more = []
def grow(signum, frame):
    # SIGUSR1: allocate and touch another 64 MiB (to drive a cgroup into OOM)
    b = bytearray(64 * 2**20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    more.append(b)
signal.signal(signal.SIGUSR1, grow)
stop = threading.Event()
ts = [threading.Thread(target=stop.wait, daemon=True) for _ in range(threads - 1)]
for t in ts:
    t.start()
print(f"ready {os.getpid()}", flush=True)
deadline = time.time() + lifetime
while time.time() < deadline and os.getppid() == ppid:
    time.sleep(0.1)
"""


@dataclass
class VllmShapedTree:
    """Real processes shaped like a vLLM CPU engine at TP=``tp`` (see the module docstring)."""

    tmp: Path
    tp: int = 2
    mib: int = 48
    threads: int = 8
    lifetime: float = 180.0
    env: dict[str, str] = field(default_factory=dict)
    extra_argv: tuple[str, ...] = ()
    #: a ``cgroup.procs`` file: the whole tree starts inside that cgroup
    cgroup_procs: Path | None = None
    proc: subprocess.Popen | None = None
    #: the API server's PID (kept after exit, for "it has gone" checks)
    pid: int = 0
    engine_pid: int = 0
    worker_pids: list[int] = field(default_factory=list)

    @property
    def model_dir(self) -> Path:
        return self.tmp / "tiny-model"

    def __enter__(self) -> VllmShapedTree:
        numactl = shutil.which("numactl")
        if numactl is None:
            raise RuntimeError("numactl is not installed")
        topo = read_topology(SysRoots())
        cpu_node = topo.cpu_to_node()
        cpus = sorted(cpu_node)
        workers = [{"cpu": cpus[i % len(cpus)], "node": cpu_node[cpus[i % len(cpus)]]} for i in range(self.tp)]
        bindir = self.tmp / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        self.model_dir.mkdir(exist_ok=True)
        script = bindir / "vllm"
        script.write_text(f"#!{sys.executable}\n{API}")
        script.chmod(0o755)
        spec = {"workers": workers, "mib": self.mib, "threads": self.threads, "lifetime": self.lifetime}
        spec["numactl"] = numactl
        spec["python"] = sys.executable  # retitled processes cannot find their own interpreter
        bind = "|".join(str(w["cpu"]) for w in workers)
        env = dict(
            os.environ,
            SHAPED_LIFETIME=str(self.lifetime),
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CPU_OMP_THREADS_BIND=bind,
            **self.env,
        )
        argv = [str(script), "serve", str(self.model_dir), "--tensor-parallel-size", str(self.tp)]
        argv += [*self.extra_argv, ENGINE, WORKER, json.dumps(spec)]
        join = None
        if self.cgroup_procs is not None:
            procs_file = str(self.cgroup_procs)

            def join() -> None:
                with open(procs_file, "w") as fh:
                    fh.write("0")

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=join)
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("ready "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"vLLM-shaped tree did not start: {line!r}")
        info = json.loads(line[len("ready ") :])
        self.engine_pid, self.worker_pids = info["engine"], info["workers"]
        if -1 in self.worker_pids:
            self.__exit__(None, None, None)
            raise RuntimeError("a worker of the vLLM-shaped tree did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        for pid in [*self.worker_pids, self.engine_pid]:
            if pid > 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExporterProcess:
    """``numatop-llm export`` as a child process on 127.0.0.1 (a port it picks), stopped by SIGTERM."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = ["--listen", "127.0.0.1:0", *args] if "--listen" not in args else list(args)
        # the exporter remembers the last engine for ``explain``: keep that out of the real state dir
        self._state = tempfile.TemporaryDirectory(prefix="numatop-llm-state-")
        self.env = dict(env if env is not None else os.environ, XDG_STATE_HOME=self._state.name)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.first_line = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def __enter__(self) -> ExporterProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "numatop_llm", "export", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=self.env,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        self.first_line = self.proc.stdout.readline().strip() if ready else ""
        m = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", self.first_line)
        if not m:
            err = self.stop()
            raise RuntimeError(f"exporter did not start: {self.first_line!r} {err!r}")
        self.port = int(m.group(1))
        return self

    def scrape(self, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            return r.read().decode()

    def wait_for(self, predicate, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.scrape()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"exporter output never satisfied the condition:\n{text[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> str:
        """Stop by signal; returns stderr. Raises if it does not exit in time (after killing it)."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError("exporter did not exit after the signal") from None
        return err

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
        finally:
            self._state.cleanup()


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    """A real Prometheus started from its binary on 127.0.0.1, scraping given targets every second.

    Storage and config live in ``tmp``; the server is stopped by PID (SIGTERM, then SIGKILL).
    """

    def __init__(self, tmp: Path, targets: list[str], rule_files: list[Path] = (), interval: str = "1s") -> None:
        self.tmp = tmp
        self.targets = targets
        self.rule_files = list(rule_files)
        self.interval = interval
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = tmp / "prometheus.log"

    def _config(self) -> str:
        lines = [
            "global:",
            f"  scrape_interval: {self.interval}",
            f"  evaluation_interval: {self.interval}",
        ]
        if self.rule_files:
            lines.append("rule_files:")
            lines += [f"  - {json.dumps(str(p))}" for p in self.rule_files]
        lines += [
            "scrape_configs:",
            "  - job_name: numatop-llm",
            f"    scrape_timeout: {self.interval}",
            "    static_configs:",
            f"      - targets: {json.dumps(self.targets)}",
        ]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> PrometheusServer:
        binary = prometheus_binary()
        assert binary, "prometheus is not installed"
        cfg = self.tmp / "prometheus.yml"
        cfg.write_text(self._config())
        for _attempt in range(3):
            self.port = free_port()
            data = self.tmp / f"data-{self.port}"
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={cfg}",
                        f"--storage.tsdb.path={data}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=log,
                )
            if self._wait_ready(30):
                return self
            self._kill()
        raise RuntimeError(f"prometheus did not become ready:\n{self.log.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            return json.loads(exc.read() or b"{}")

    def query(self, expr: str) -> list[dict]:
        """Instant PromQL query through the HTTP API; the result vector (raises on a query error)."""
        out = self.api("query", query=expr)
        if out.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {out}")
        return out["data"]["result"]

    def wait_for(self, expr: str, predicate, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        targets = self.api("targets")
        raise AssertionError(f"{expr!r} never satisfied the condition; last result {result}; targets {targets}")

    def _kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self._kill()


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Exposition text → {sample name: [(labels, value)]}, with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def family_names(text: str) -> set[str]:
    """Every metric name the exposition declares (``# TYPE`` lines), with counter suffixes."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
    return names


class MemoryCgroup:
    """A child memory cgroup of this process's own (v2 or v1), removed at exit; None-safe probing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir: Path | None = None
        self.version = 0

    @staticmethod
    def _own() -> dict[str, str]:
        out = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
        return out

    def __enter__(self) -> MemoryCgroup:
        own = self._own()
        base = Path("/sys/fs/cgroup")
        candidates = []
        if "memory" in own:
            candidates.append((base / "memory" / own["memory"].lstrip("/"), 1))
        if "" in own:
            candidates.append((base / own[""].lstrip("/"), 2))
        for parent, version in candidates:
            if version == 2 and "memory" not in (parent / "cgroup.subtree_control").read_text(errors="replace"):
                continue
            d = parent / self.name
            try:
                d.mkdir()
            except OSError:
                continue
            self.dir, self.version = d, version
            return self
        raise PermissionError("cannot create a memory cgroup here")

    @property
    def procs(self) -> Path:
        assert self.dir is not None
        return self.dir / "cgroup.procs"

    def usage(self) -> int:
        assert self.dir is not None
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.dir / name).read_text())

    def set_limit(self, limit: int) -> None:
        assert self.dir is not None
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        (self.dir / name).write_text(str(limit))

    def __exit__(self, *exc: object) -> None:
        if self.dir is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)
