"""Test doubles for the launcher (no tests here).

- :class:`FakeSystem`: the machine as the relaunch state machine sees it, with a fake clock, so
  timeouts of a minute run in microseconds.
- :class:`FakeVllm`: a REAL process tree shaped like ``vllm serve`` (API server → ``VLLM::EngineCore``
  → ``VLLM::Worker``), serving ``/health``, ``/metrics``, ``/v1/models``, ``/v1/completions`` over HTTP,
  mapping a ``/dev/shm`` segment it leaves behind on SIGTERM, like vLLM does. It starts in 0.2 s
  instead of vLLM's 30 s, so the live paths (spawn, setsid, privileges, cgroups, signals, ports,
  clean-up, rollback) are tested on every run; the real engine tests cover what only vLLM can show.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from numatop_llm.launcher.spec import LaunchSpec
from numatop_llm.launcher.system import HttpResult, ProcRef

# ----------------------------------------------------------------------------------------------
# FakeSystem: fake clock, fake processes
# ----------------------------------------------------------------------------------------------


@dataclass
class FakeEngine:
    root: int
    port: int
    pids: list[int]
    started: float
    healthy_after: float = 2.0
    #: dies by itself this many seconds after start (None: never)
    dies_after: float | None = None
    exit_code: int = 1
    completion_status: int = 200
    #: seconds between SIGTERM and the tree exiting; None: ignores SIGTERM
    term_seconds: float | None = 1.0
    dead_at: float | None = None
    killed: set[int] = field(default_factory=set)
    term_at: float | None = None
    leftovers: list[str] = field(default_factory=list)


class FakeSpawned:
    def __init__(self, system: FakeSystem, engine: FakeEngine) -> None:
        self.system, self.engine, self.pid = system, engine, engine.root

    def poll(self) -> int | None:
        self.system.tick()
        e = self.engine
        if e.dead_at is None:
            return None
        if e.root in e.killed:
            return -9
        return 0 if e.term_at is not None else e.exit_code


class FakeSystem:
    """A machine with fake engines. ``metrics`` gives (running, waiting) as a function of the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.engines: list[FakeEngine] = []
        self.next_pid = 1000
        self.metrics = lambda now: (0.0, 0.0)
        self.metrics_status = 200
        self.spawn_plans: list[dict] = []
        self.spawned_specs: list[LaunchSpec] = []
        self.removed: list[str] = []
        self.signals: list[tuple[int, int]] = []
        self.port_blocked_by: int | None = None
        self.oom_text: list[str] = []
        self.logs: dict[Path, str] = {}

    # engines
    def add_engine(self, port: int = 8000, n: int = 3, **kw) -> FakeEngine:
        pids = list(range(self.next_pid, self.next_pid + n))
        self.next_pid += n + 10
        e = FakeEngine(root=pids[0], port=port, pids=pids, started=self.now, **kw)
        e.leftovers = [f"/dev/shm/psm_{pids[0]}"]
        self.engines.append(e)
        return e

    def engine_of(self, pid: int) -> FakeEngine | None:
        return next((e for e in self.engines if pid in e.pids), None)

    def tick(self) -> None:
        for e in self.engines:
            if e.dead_at is not None:
                continue
            termed = e.term_at is not None and e.term_seconds is not None and self.now >= e.term_at + e.term_seconds
            died = e.dies_after is not None and self.now >= e.started + e.dies_after
            if termed or died or set(e.pids) <= e.killed:
                e.dead_at = self.now

    def _pid_alive(self, pid: int) -> bool:
        self.tick()
        e = self.engine_of(pid)
        return e is not None and e.dead_at is None and pid not in e.killed

    # System protocol
    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def proc_ref(self, pid: int) -> ProcRef | None:
        return ProcRef(pid, 1) if self._pid_alive(pid) else None

    def alive(self, ref: ProcRef) -> bool:
        return self._pid_alive(ref.pid)

    def tree(self, pid: int) -> list[ProcRef]:
        e = self.engine_of(pid)
        if e is None:
            return []
        labels = ["api_server", "EngineCore", "Worker"] + ["Worker"] * 8
        return [ProcRef(p, 1, labels[i]) for i, p in enumerate(e.pids) if self._pid_alive(p)]

    def kill(self, ref: ProcRef, sig: int) -> bool:
        if not self._pid_alive(ref.pid):
            return False
        self.signals.append((ref.pid, sig))
        e = self.engine_of(ref.pid)
        assert e is not None
        if sig == signal.SIGTERM and ref.pid == e.root and e.term_at is None:
            e.term_at = self.now
        elif sig == signal.SIGKILL:
            e.killed.add(ref.pid)
        self.tick()
        return True

    def _listener(self, port: int) -> FakeEngine | None:
        self.tick()
        return next((e for e in self.engines if e.port == port and e.dead_at is None), None)

    def port_free(self, host: str | None, port: int) -> bool:
        return self._listener(port) is None and self.port_blocked_by is None

    def port_owner(self, port: int) -> int | None:
        e = self._listener(port)
        return e.root if e else self.port_blocked_by

    def leftovers(self, tree: list[ProcRef], tmpdir: str | None = None) -> list[str]:
        out: list[str] = []
        for r in tree:
            e = self.engine_of(r.pid)
            if e is not None:
                out += [x for x in e.leftovers if x not in out]
        return out

    def remove_leftovers(self, paths: list[str]) -> tuple[list[str], list[str]]:
        self.removed += paths
        return list(paths), []

    def spawn(self, spec: LaunchSpec, log_path: Path) -> FakeSpawned:
        self.spawned_specs.append(spec)
        plan = dict(self.spawn_plans.pop(0) if self.spawn_plans else {})
        self.logs[log_path] = plan.pop("log", "INFO starting\n")
        e = self.add_engine(port=spec.port, n=2 + spec.config.tensor_parallel_size, **plan)
        return FakeSpawned(self, e)

    def http(self, method: str, url: str, body: dict | None = None, *, headers=None, timeout: float = 5.0):
        port = int(url.split(":")[2].split("/")[0])
        path = "/" + url.split("/", 3)[3]
        e = self._listener(port)
        if e is None:
            return HttpResult(0, "", "connection refused")
        if path == "/metrics":
            if self.metrics_status != 200:
                return HttpResult(self.metrics_status, "", f"HTTP {self.metrics_status}")
            r, w = self.metrics(self.now)
            return HttpResult(
                200,
                f'vllm:num_requests_running{{model_name="m"}} {r}\nvllm:num_requests_waiting{{model_name="m"}} {w}\n',
            )
        if self.now < e.started + e.healthy_after:
            return HttpResult(0, "", "connection refused")
        if path == "/health":
            return HttpResult(200, "")
        if path == "/v1/models":
            return HttpResult(200, json.dumps({"data": [{"id": "m"}]}))
        if path == "/v1/completions":
            if e.completion_status != 200:
                return HttpResult(e.completion_status, "boom", f"HTTP {e.completion_status}")
            return HttpResult(200, json.dumps({"choices": [{"text": " hi"}], "usage": {"completion_tokens": 4}}))
        return HttpResult(404, "")

    def log_tail(self, path: Path, lines: int = 30) -> str:
        return self.logs.get(path, "")

    def oom_kills(self, pids) -> list[str]:
        return list(self.oom_text)


def fake_spec(pid: int | None = 1000, port: int = 8000, tp: int = 1, env: dict | None = None) -> LaunchSpec:
    argv = ("/venv/bin/python3", "/venv/bin/vllm", "serve", "/models/m", "--port", str(port))
    if tp != 1:
        argv += ("--tensor-parallel-size", str(tp))
    environ = {"PATH": "/usr/bin", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
    environ.update(env or {})
    return LaunchSpec(
        argv=argv,
        program="/venv/bin/python3",
        cwd="/srv",
        uid=0,
        gid=0,
        _env=tuple(environ.items()),
        port=port,
        model="/models/m",
        pid=pid,
        starttime=1,
    )


# ----------------------------------------------------------------------------------------------
# FakeVllm: a real process tree shaped like vllm serve
# ----------------------------------------------------------------------------------------------

FAKE_SERVER = r'''
import http.server, json, mmap, os, signal, socketserver, subprocess, sys, threading, time, uuid

CHILD = """
import os, signal, sys, time, mmap, subprocess
kid = None
def _term(*a):
    if kid is not None and kid.poll() is None:
        kid.terminate(); kid.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, _term)
shm = os.environ.get("FAKE_SHM")
if shm:
    fd = os.open(shm, os.O_RDWR); m = mmap.mmap(fd, 4096)
if sys.argv[1:] == ["core"]:
    tmp = os.environ.get("FAKE_DIST_DIR")
    if tmp:
        open(os.path.join(tmp, "vllm_dist_" + os.urandom(8).hex()), "w").write("store")
    kid = subprocess.Popen(["VLLM::Worker", "-c", os.environ["FAKE_CHILD"], "worker"], executable=os.environ["FAKE_PYTHON"])
    if os.environ.get("FAKE_FAIL") == "kill9":
        time.sleep(0.3); os.kill(kid.pid, 9); kid.wait()
        print("Worker proc VllmWorker-0 died unexpectedly (exit code: -9)", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
while True:
    time.sleep(0.2)
    if kid is not None and kid.poll() is not None:
        sys.exit(1)
"""

args = sys.argv[1:]
def flag(name, default=None):
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default

port = int(flag("--port", "8000")); host = flag("--host", "127.0.0.1"); model = args[1]
api_key = flag("--api-key") or os.environ.get("VLLM_API_KEY")
fail = os.environ.get("FAKE_FAIL", "")
print("fake vllm serve", model, "port", port, "tp", flag("--tensor-parallel-size", "1"), flush=True)
time.sleep(float(os.environ.get("FAKE_STARTUP", "0.2")))
if fail == "exit":
    print("ValueError: bad bind list", flush=True); sys.exit(3)
bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
if bind not in ("auto", "nobind"):
    cpus = set(os.sched_getaffinity(0))
    for part in bind.split("|"):
        for rng in part.split(","):
            lo, _, hi = rng.partition("-")
            if any(c not in cpus for c in range(int(lo), int(hi or lo) + 1)):
                print(f"ValueError: VLLM_CPU_OMP_THREADS_BIND {bind}: CPU {rng} is not allowed", flush=True)
                sys.exit(3)
shm = f"/dev/shm/psm_fake_{os.getpid()}_{uuid.uuid4().hex[:6]}"
fd = os.open(shm, os.O_RDWR | os.O_CREAT, 0o600); os.ftruncate(fd, 4096); held = mmap.mmap(fd, 4096)
env = dict(os.environ, FAKE_SHM=shm, FAKE_CHILD=CHILD, FAKE_PYTHON=sys.executable)
core = subprocess.Popen(["VLLM::EngineCore", "-c", CHILD, "core"], executable=sys.executable, env=env, stdout=subprocess.PIPE)
if core.stdout.readline().strip() != b"ready":  # like vLLM: no API before the engine core is up
    print("RuntimeError: Engine core initialization failed. See root cause above.", flush=True)
    sys.exit(1)
inflight = 0; lock = threading.Lock()
if os.environ.get("TMPDIR"):  # like vLLM's ZMQ ipc:// sockets: bound in TMPDIR, never unlinked
    import socket
    ipc = socket.socket(socket.AF_UNIX); ipc.bind(os.path.join(os.environ["TMPDIR"], str(uuid.uuid4()))); ipc.listen()

class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def send(self, code, body, ctype="application/json"):
        data = body.encode(); self.send_response(code); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def authorized(self):
        return not api_key or self.headers.get("Authorization") == f"Bearer {api_key}"
    def do_GET(self):
        if self.path == "/health":
            return self.send(200 if core.poll() is None else 500, "")
        if self.path == "/metrics":
            return self.send(200, f'vllm:num_requests_running{{model_name="{model}"}} {float(inflight)}\nvllm:num_requests_waiting{{model_name="{model}"}} 0.0\n', "text/plain")
        if self.path == "/v1/models":
            if not self.authorized(): return self.send(401, '{"error": "unauthorized"}')
            return self.send(200, json.dumps({"data": [{"id": model}]}))
        self.send(404, "")
    def do_POST(self):
        global inflight
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path != "/v1/completions": return self.send(404, "")
        if not self.authorized(): return self.send(401, '{"error": "unauthorized"}')
        if fail == "completion": return self.send(500, '{"error": "kernel failed"}')
        with lock: inflight += 1
        try:
            time.sleep(float(body.get("seconds", 0.0)))
        finally:
            with lock: inflight -= 1
        n = int(body.get("max_tokens", 4))
        self.send(200, json.dumps({"choices": [{"text": " x" * n}], "usage": {"completion_tokens": n}, "model": body.get("model")}))

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

srv = S((host, port), H)
def stop(*a):
    if os.environ.get("FAKE_IGNORE_TERM"):
        return
    core.terminate()
    threading.Thread(target=srv.shutdown).start()
signal.signal(signal.SIGTERM, stop); signal.signal(signal.SIGINT, stop)
threading.Thread(target=lambda: (core.wait(), os.kill(os.getpid(), signal.SIGTERM) if not os.environ.get("FAKE_IGNORE_TERM") else None), daemon=True).start()
srv.serve_forever()
core.wait()
print("fake vllm stopped", flush=True)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeVllm:
    """Install the fake ``vllm`` script under ``root/bin`` and start/stop trees of it."""

    def __init__(self, root: Path, python: str = "/usr/bin/python3") -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.script = self.bin / "vllm"
        self.script.write_text(f"#!{python}\n{FAKE_SERVER}")
        self.script.chmod(0o755)
        self.model = root / "model"
        self.model.mkdir(exist_ok=True)
        self.python = python
        self.procs: list[subprocess.Popen] = []

    def start(
        self,
        port: int,
        *,
        env: dict | None = None,
        args: tuple[str, ...] = (),
        user: int | None = None,
        group: int | None = None,
        prefix: tuple[str, ...] = (),
        preexec=None,
    ) -> subprocess.Popen:
        environ = {"PATH": "/usr/bin:/bin", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "auto"}
        environ.update(env or {})
        argv = [*prefix, self.python, str(self.script), "serve", str(self.model), "--host", "127.0.0.1"]
        argv += ["--port", str(port), *args]
        log = open(self.root / f"fake-{port}-{len(self.procs)}.log", "ab")  # noqa: SIM115
        p = subprocess.Popen(
            argv,
            env=environ,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if group is not None else None,
            preexec_fn=preexec,
        )
        log.close()
        self.procs.append(p)
        wait_health(port)
        return p

    def stop_all(self) -> None:
        """Kill every tree this fake started, and every tree a relaunch started from its script.

        Waits until every process of those trees is gone before sweeping the segments: a dying
        process still maps its segment, and a sweep that ran too early left it behind.
        """
        doomed: list[int] = []
        for p in self.procs:
            if p.poll() is None:
                doomed += tree_pids(p.pid)
                with_suppress(os.killpg, p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        for pid in self.running_api_servers():
            doomed += tree_pids(pid)
            kill_tree(pid)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in doomed) and time.monotonic() < deadline:
            for pid in doomed:
                with_suppress(os.kill, pid, signal.SIGKILL)
            time.sleep(0.05)
        for seg in Path("/dev/shm").glob("psm_fake_*"):
            if not any(str(seg) in " ".join(_held(pid)) for pid in _all_pids()):
                seg.unlink(missing_ok=True)

    def running_api_servers(self) -> list[int]:
        """PIDs of live API servers running this fake's script (started by us or by a relaunch)."""
        out = []
        for pid in _all_pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmd) > 1 and cmd[1] == str(self.script).encode():
                out.append(pid)
        return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (reaping our own children on the way)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def with_suppress(fn, *a) -> None:
    try:
        fn(*a)
    except OSError:
        pass


def wait_health(port: int, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"fake vllm on port {port} did not become healthy")


def tree_pids(pid: int) -> list[int]:
    """Live descendants of ``pid`` (itself included)."""
    from numatop_llm.launcher.system import LiveSystem

    return [r.pid for r in LiveSystem().tree(pid)]


def kill_tree(pid: int) -> None:
    for p in reversed(tree_pids(pid)):
        with_suppress(os.kill, p, signal.SIGKILL)


@contextlib.contextmanager
def fake_vllm_root(tag: str):
    """A :class:`FakeVllm` in a fresh directory under /tmp (readable by other users, unlike /root);
    every tree it started is killed and every segment they left is removed at exit."""
    root = Path(tempfile.mkdtemp(prefix=f"numatop-launcher-{tag}-", dir="/tmp"))
    root.chmod(0o755)
    fv = FakeVllm(root)
    try:
        yield fv
    finally:
        fv.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _held(pid: int) -> list[str]:
    try:
        return [line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()]
    except (OSError, IndexError):
        return []
