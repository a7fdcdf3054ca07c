"""The relaunch state machine: capture → plan → drain → stop → port → cleanup → start → health → verify.

Any failure once the old engine is down rolls back: the new tree is stopped, the old command is
started the same way and verified. Every transition is reported to ``on_step`` (the TUI's
progress panel, the CLI's lines) and every finished step is journaled, secrets masked.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numatop_llm.launcher.diff import diff
from numatop_llm.launcher.journal import Journal
from numatop_llm.launcher.scrub import Scrubber
from numatop_llm.launcher.spec import LaunchSpec
from numatop_llm.launcher.steps import (
    BLOCKING_VERDICTS,
    FAILED,
    METRIC_RUNNING,
    OK,
    RUNNING,
    SKIPPED,
    Outcome,
    Step,
    parse_request_counts,
)
from numatop_llm.launcher.system import LiveSystem, ProcRef, Spawned, SpawnError, System
from numatop_llm.statedir import state_dir

VERIFY_PROMPT = "Hello, my name is"
_KILLED_9 = re.compile(r"exit ?code:? ?-9\b|exitcode=-9\b|died with -9|signal 9\b|SIGKILL", re.IGNORECASE)


class _Failed(Exception):
    """A step failed; carries the one-line reason."""


class Relaunch:
    """Restart the engine ``old`` (captured, running) as ``new``; roll back to ``old`` if ``new`` fails.

    ``plan`` is the planner's ``Plan`` for ``new`` (its ``verdict`` gates the relaunch unless
    ``force``); ``plan_error`` says why there is none. ``system`` is the machine (a fake in tests).
    """

    def __init__(
        self,
        old: LaunchSpec,
        new: LaunchSpec,
        *,
        drain_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        start_timeout: float = 300.0,
        verify_timeout: float = 180.0,
        verify_request: bool = True,
        no_drain: bool = False,
        journal: Journal | None = None,
        on_step: Callable[[Step], None] | None = None,
        plan: Any = None,
        plan_error: str | None = None,
        force: bool = False,
        system: System | None = None,
        poll_interval: float = 0.5,
        log_dir: Path | None = None,
        port_timeout: float = 15.0,
    ) -> None:
        self.old, self.new = old, new
        self.drain_timeout, self.stop_timeout = drain_timeout, stop_timeout
        self.start_timeout, self.verify_timeout = start_timeout, verify_timeout
        self.verify_request, self.no_drain = verify_request, no_drain
        self.scrubber = Scrubber(old.secret_values() | new.secret_values())
        self.journal = journal if journal is not None else Journal()
        self.journal.scrubber.add(old.secret_values() | new.secret_values())
        self.on_step = on_step
        self.plan, self.plan_error, self.force = plan, plan_error, force
        self.system: System = system if system is not None else LiveSystem()
        self.poll = poll_interval
        self.log_dir = Path(log_dir) if log_dir is not None else state_dir() / "logs"
        self.port_timeout = port_timeout
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.steps: list[Step] = []
        self.callback_errors: list[str] = []
        self._cancel = threading.Event()
        self._explanations: list[str] = []
        self._seen: dict[int, ProcRef] = {}
        self._leftovers: set[str] = set()

    # -- public -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask a relaunch still draining to give up (nothing changed). No effect once stopping began."""
        self._cancel.set()

    def run(self) -> Outcome:
        """Run every step; never raises for an expected failure (the outcome says what happened)."""
        t0 = self.system.monotonic()
        self.journal.write(
            {
                "event": "begin",
                "run": self.run_id,
                "old": self.old.summary(),
                "new": self.new.summary(),
                "diff": diff(self.old, self.new),
                "verdict": getattr(self.plan, "verdict", None),
                "force": self.force,
            }
        )
        try:
            outcome = self._run()
        except Exception as exc:  # a bug must still end in a journaled, readable outcome
            outcome = self._outcome(False, False, None, f"internal error: {type(exc).__name__}: {exc}")
        self.journal.write(
            {
                "event": "end",
                "run": self.run_id,
                "ok": outcome.ok,
                "rolled_back": outcome.rolled_back,
                "new_pid": outcome.new_pid,
                "message": outcome.message,
                "seconds": round(self.system.monotonic() - t0, 3),
                "explanations": list(outcome.explanations),
                "log_path": outcome.log_path,
            }
        )
        return outcome

    # -- the sequence -------------------------------------------------------------------------
    def _run(self) -> Outcome:
        old_ref = self._step("capture", self._capture)
        if old_ref is None:
            return self._outcome(False, False, None, self._last_message() + "; nothing changed")
        if self._step("plan", self._plan_check) is None:
            return self._outcome(False, False, self.old.pid, self._last_message() + "; nothing changed")
        if self._step("drain", self._drain) is None:
            return self._outcome(False, False, self.old.pid, self._last_message() + "; nothing changed")
        tree = self.system.tree(old_ref.pid) or [old_ref]
        leftovers = set(self.system.leftovers(tree, _tmpdir(self.old)))
        if self._step("stop", lambda: self._stop(old_ref, tree)) is None:
            return self._outcome(
                False, False, None, self._last_message() + "; the old engine may be partly stopped, nothing started"
            )
        # from here on the old engine is gone: any failure rolls back
        failure, new_pid, log_path = self._bring_up(self.new, "", leftovers, "new")
        if failure is None:
            msg = f"relaunched: pid {self.old.pid} → {new_pid}"
            changes = [line.strip() for line in diff(self.old, self.new) if not line.startswith(("-", "+"))]
            if changes:
                msg += " (" + "; ".join(changes[:4]) + ")"
            return self._outcome(True, False, new_pid, msg, log_path=log_path)
        tail = self.scrubber.text(self.system.log_tail(log_path)) if log_path else ""
        if log_path and _KILLED_9.search(tail) and not self._explanations:
            self._explanations.append("a process of the new engine was killed with signal 9 (SIGKILL)")
        new_leftovers = set(self._leftovers)
        rb_failure, rb_pid, rb_log = self._rollback(new_pid, new_leftovers)
        why = f"the new engine failed ({failure})"
        if self._explanations:
            why += ": " + " ".join(self._explanations)
        if rb_failure is None:
            return self._outcome(
                False,
                True,
                rb_pid,
                f"{why}; rolled back to the old command, pid {rb_pid} answers again",
                log_tail=tail,
                log_path=log_path,
            )
        return self._outcome(
            False,
            False,
            None,
            f"{why}; the rollback failed too ({rb_failure}): NO ENGINE IS RUNNING — old command log {rb_log}",
            log_tail=tail,
            log_path=log_path,
        )

    def _bring_up(
        self, spec: LaunchSpec, prefix: str, leftovers: set[str], tag: str
    ) -> tuple[str | None, int | None, Path | None]:
        """port → cleanup → start → health → verify for ``spec``. Returns (failure, pid, log path)."""
        self._seen, self._leftovers = {}, set()
        if self._step(prefix + "port", lambda: self._port(spec)) is None:
            return self._last_message(), None, None
        self._step(prefix + "cleanup", lambda: self._cleanup(leftovers))
        log_path = self.log_dir / f"engine-{self.run_id}-{tag}.log"
        spawned = self._step(prefix + "start", lambda: self._start(spec, log_path))
        if spawned is None:
            return self._last_message(), None, log_path
        self._remember_tree(spawned.pid, spec)
        if self._step(prefix + "health", lambda: self._health(spec, spawned)) is None:
            return self._last_message(), spawned.pid, log_path
        if self._step(prefix + "verify", lambda: self._verify(spec, spawned)) is None:
            return self._last_message(), spawned.pid, log_path
        return None, spawned.pid, log_path

    def _rollback(self, new_pid: int | None, new_leftovers: set[str]) -> tuple[str | None, int | None, Path | None]:
        seen = list(self._seen.values())

        def stop_new() -> str:
            if new_pid is None and not seen:
                raise _Skipped("no new engine was started")
            live = [r for r in seen if self.system.alive(r)]
            root = next((r for r in live if r.pid == new_pid), None)
            if new_pid is not None:
                live += [r for r in self.system.tree(new_pid) if r not in live]
            if not live:
                return "the new engine had already exited"
            new_leftovers.update(self.system.leftovers(live, _tmpdir(self.new)))
            return self._stop(root or live[0], live)

        self._step("rollback stop", stop_new)
        return self._bring_up(self.old, "rollback ", new_leftovers, "rollback")

    # -- steps --------------------------------------------------------------------------------
    def _capture(self) -> ProcRef:
        if self.old.pid is None:
            raise _Failed("the old spec has no running process")
        ref = ProcRef(self.old.pid, self.old.starttime, "api_server")
        if not self.system.alive(ref):
            raise _Failed(f"pid {self.old.pid} has exited (or was replaced) since it was captured")
        self._note(f"pid {self.old.pid}: {self.old.masked_command()}")
        return ref

    def _plan_check(self) -> str:
        if self.plan is None:
            if self.plan_error:
                if not self.force:
                    raise _Failed(f"{self.plan_error}; use --force to relaunch without a plan check")
                return f"{self.plan_error}; going on without a plan check (--force)"
            raise _Skipped("no plan given")
        verdict = str(getattr(self.plan, "verdict", "?"))
        reasons = [str(x) for x in (getattr(self.plan, "errors", None) or [])]
        reasons += [str(getattr(f, "message", f)) for f in (getattr(self.plan, "findings", None) or [])]
        why = f": {reasons[0]}" if reasons else ""
        if verdict in BLOCKING_VERDICTS:
            if not self.force:
                raise _Failed(f"the planner's verdict is {verdict}{why}; use --force to relaunch anyway")
            return f"verdict {verdict}{why} — going on because of --force"
        return f"verdict {verdict}"

    def _drain(self) -> str:
        if self.no_drain:
            raise _Skipped("not waiting for requests in flight (--no-drain)")
        t0 = self.system.monotonic()
        deadline = t0 + self.drain_timeout
        url = self.old.base_url + "/metrics"
        failures = 0
        first: tuple[float, float] | None = None
        while True:
            if self._cancel.is_set():
                raise _Failed("cancelled while draining")
            r = self.system.http("GET", url, timeout=5)
            counts = parse_request_counts(r.body) if r.status == 200 else None
            now = self.system.monotonic()
            if counts is None:
                failures += 1
                if failures >= 3:
                    what = r.error or f"HTTP {r.status}" if r.status != 200 else f"no {METRIC_RUNNING} in it"
                    raise _Failed(f"cannot read {url} ({what}); use --no-drain to stop without draining")
            else:
                failures = 0
                first = first or counts
                running, waiting = counts
                if running == 0 and waiting == 0:
                    if first == (0, 0):
                        return "no request in flight"
                    return f"waited {now - t0:.1f} s for {first[0]:g} running and {first[1]:g} waiting request(s)"
                if now >= deadline:
                    raise _Failed(
                        f"still {running:g} running, {waiting:g} waiting after {self.drain_timeout:g} s "
                        "(raise --drain-timeout, or --no-drain to stop anyway)"
                    )
                self._progress(f"{running:g} running, {waiting:g} waiting", deadline - now)
            if now >= deadline and counts is None:
                raise _Failed(f"cannot read {url} within {self.drain_timeout:g} s")
            self.system.sleep(self.poll)

    def _stop(self, root: ProcRef, tree: list[ProcRef]) -> str:
        tree = list(dict.fromkeys([root, *tree]))
        t0 = self.system.monotonic()
        if self.system.alive(root):
            self.system.kill(root, signal.SIGTERM)
        deadline = t0 + self.stop_timeout
        alive = tree
        while True:
            alive = [r for r in tree if self.system.alive(r)]
            now = self.system.monotonic()
            if not alive or now >= deadline:
                break
            self._progress(f"waiting for {len(alive)} process(es) to exit: {_labels(alive)}", deadline - now)
            self.system.sleep(min(self.poll, 0.2))
        if not alive:
            return f"{len(tree)} process(es) exited {self.system.monotonic() - t0:.1f} s after SIGTERM"
        killed = [r for r in alive if self.system.kill(r, signal.SIGKILL)]
        kill_deadline = self.system.monotonic() + 10
        while alive and self.system.monotonic() < kill_deadline:
            self.system.sleep(0.1)
            alive = [r for r in alive if self.system.alive(r)]
        if alive:
            raise _Failed(f"{_labels(alive)} still alive after SIGKILL (pids {', '.join(str(r.pid) for r in alive)})")
        self._note_detail(sigkill=[r.pid for r in killed])
        return (
            f"SIGKILL sent to {len(killed)} process(es) still alive {self.stop_timeout:g} s after SIGTERM: "
            + _labels(killed)
        )

    def _port(self, spec: LaunchSpec) -> str:
        t0 = self.system.monotonic()
        deadline = t0 + self.port_timeout
        while not self.system.port_free(spec.host, spec.port):
            now = self.system.monotonic()
            if now >= deadline:
                owner = self.system.port_owner(spec.port)
                who = f" by pid {owner}" if owner else ""
                raise _Failed(f"port {spec.port} is still in use{who} after {self.port_timeout:g} s")
            self._progress(f"waiting for port {spec.port} to be free", deadline - now)
            self.system.sleep(self.poll)
        return f"port {spec.port} is free"

    def _cleanup(self, leftovers: set[str]) -> str:
        if not leftovers:
            raise _Skipped("nothing left behind")
        removed, kept = self.system.remove_leftovers(sorted(leftovers))
        self._note_detail(removed=removed, kept=kept)
        msg = f"removed {len(removed)} leftover(s): {', '.join(Path(p).name for p in removed)}" if removed else ""
        if kept:
            msg += ("; " if msg else "") + f"kept {len(kept)} still in use: {', '.join(Path(p).name for p in kept)}"
        return msg or "the leftovers had already gone"

    def _start(self, spec: LaunchSpec, log_path: Path) -> Spawned:
        try:
            spawned = self.system.spawn(spec, log_path)
        except SpawnError as exc:
            raise _Failed(self.scrubber.text(str(exc))) from None
        self._note_detail(pid=spawned.pid, command=spec.summary()["command"], log=str(log_path))
        self._result_message = f"pid {spawned.pid}, log {log_path}"
        return spawned

    def _health(self, spec: LaunchSpec, spawned: Spawned) -> str:
        t0 = self.system.monotonic()
        deadline = t0 + self.start_timeout
        url = spec.base_url + "/health"
        last_tree = 0.0
        while True:
            now = self.system.monotonic()
            if now - last_tree >= 2.0:
                self._remember_tree(spawned.pid, spec)
                last_tree = now
            rc = spawned.poll()
            if rc is not None:
                self._explain_death()
                raise _Failed(f"pid {spawned.pid} {_exit_text(rc)} {now - t0:.1f} s after start")
            r = self.system.http("GET", url, timeout=2)
            if r.status == 200:
                self._remember_tree(spawned.pid, spec)
                return f"/health answered 200 {self.system.monotonic() - t0:.1f} s after start"
            if now >= deadline:
                raise _Failed(f"/health did not answer within {self.start_timeout:g} s")
            self._progress(f"waiting for {url}", deadline - now)
            self.system.sleep(self.poll)

    def _verify(self, spec: LaunchSpec, spawned: Spawned) -> str:
        if not self.verify_request:
            raise _Skipped("no completion request (verify_request=False)")
        headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        model = spec.served_name or spec.model or ""
        r = self.system.http("GET", spec.base_url + "/v1/models", headers=headers, timeout=10)
        if r.status == 200:
            try:
                model = json.loads(r.body)["data"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                pass
        t0 = self.system.monotonic()
        done: dict[str, Any] = {}

        def request() -> None:
            done["r"] = self.system.http(
                "POST",
                spec.base_url + "/v1/completions",
                {"model": model, "prompt": VERIFY_PROMPT, "max_tokens": 4, "temperature": 0},
                headers=headers,
                timeout=self.verify_timeout,
            )

        worker = threading.Thread(target=request, daemon=True, name="relaunch-verify")
        worker.start()
        deadline = t0 + self.verify_timeout
        while worker.is_alive():
            rc = spawned.poll()
            now = self.system.monotonic()
            if rc is not None:
                self._explain_death()
                raise _Failed(f"pid {spawned.pid} {_exit_text(rc)} during the completion request")
            if now >= deadline:
                raise _Failed(f"the completion request got no answer within {self.verify_timeout:g} s")
            self._progress("waiting for one completion (the first one may compile kernels)", deadline - now)
            worker.join(self.poll)
        r = done["r"]
        took = self.system.monotonic() - t0
        if r.status != 200:
            raise _Failed(f"the completion request failed: {r.error or f'HTTP {r.status}'} {r.body[:200]}".strip())
        try:
            answer = json.loads(r.body)
            tokens = answer.get("usage", {}).get("completion_tokens")
            if not answer.get("choices"):
                raise ValueError
        except (ValueError, AttributeError):
            raise _Failed(f"the completion request answered 200 without choices: {r.body[:200]}") from None
        return f"a completion ({tokens} tokens, model {model}) answered in {took:.1f} s"

    # -- helpers ------------------------------------------------------------------------------
    def _remember_tree(self, pid: int, spec: LaunchSpec) -> None:
        tree = self.system.tree(pid)
        for r in tree:
            self._seen.setdefault(r.pid, r)
        if tree:
            self._leftovers.update(self.system.leftovers(list(self._seen.values()), _tmpdir(spec)))

    def _explain_death(self) -> None:
        if self._explanations:
            return
        self._explanations.extend(self.system.oom_kills(self._seen))

    def _step(self, name: str, action: Callable[[], Any]) -> Any:
        """Run one step: report running, then ok/skipped/failed. Returns the action's value (None on failure)."""
        self._current = name
        self._t0 = self.system.monotonic()
        self._detail: dict[str, Any] = {}
        self._result_message = ""
        self._emit(Step(name, RUNNING))
        try:
            value = action()
        except _Skipped as exc:
            self._finish(Step(name, SKIPPED, str(exc), self.system.monotonic() - self._t0))
            return True
        except _Failed as exc:
            self._finish(Step(name, FAILED, self.scrubber.text(str(exc)), self.system.monotonic() - self._t0))
            return None
        message = value if isinstance(value, str) else self._result_message
        self._finish(Step(name, OK, self.scrubber.text(message), self.system.monotonic() - self._t0))
        return value if value is not None else True

    def _progress(self, message: str, countdown: float | None) -> None:
        self._emit(
            Step(
                self._current,
                RUNNING,
                self.scrubber.text(message),
                self.system.monotonic() - self._t0,
                None if countdown is None else max(0.0, countdown),
            )
        )

    def _note(self, message: str) -> None:
        self._result_message = message

    def _note_detail(self, **kw: Any) -> None:
        self._detail.update(kw)

    def _finish(self, step: Step) -> None:
        step = Step(step.name, step.status, step.message, step.seconds, None, dict(self._detail))
        self.steps.append(step)
        self.journal.write(
            {
                "event": "step",
                "run": self.run_id,
                "name": step.name,
                "status": step.status,
                "seconds": round(step.seconds, 3),
                "message": step.message,
                **({"detail": step.detail} if step.detail else {}),
            }
        )
        self._emit(step)

    def _emit(self, step: Step) -> None:
        if self.on_step is None:
            return
        try:
            self.on_step(step)
        except Exception as exc:  # the display must not break a relaunch half-way
            self.callback_errors.append(f"{type(exc).__name__}: {exc}")

    def _last_message(self) -> str:
        failed = [s for s in self.steps if s.status == FAILED]
        s = failed[-1] if failed else self.steps[-1]
        return f"{s.name}: {s.message}"

    def _outcome(
        self, ok: bool, rolled_back: bool, pid: int | None, message: str, *, log_tail: str = "", log_path=None
    ) -> Outcome:
        return Outcome(
            ok=ok,
            rolled_back=rolled_back,
            new_pid=pid,
            steps=tuple(self.steps),
            message=self.scrubber.text(message),
            log_tail=self.scrubber.text(log_tail),
            log_path=str(log_path) if log_path else None,
            explanations=tuple(self.scrubber.text(e) for e in self._explanations),
            run_id=self.run_id,
        )


class _Skipped(Exception):
    """A step that does not apply; carries why."""


def _tmpdir(spec: LaunchSpec) -> str | None:
    """The temp dir the engine's processes use (vLLM's FileStore goes there)."""
    env = spec.environment()
    return env.get("TMPDIR") or env.get("TEMP") or env.get("TMP") or None


def _labels(refs: list[ProcRef]) -> str:
    names = [r.label or str(r.pid) for r in refs]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _exit_text(rc: int) -> str:
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"was killed by {name} ({rc})"
    return f"exited with code {rc}"
