"""One deadline loop for every front end: sample on wall-clock deadlines, mark late samples, never catch up.

A busy 2-core host can starve the monitor for seconds. The ticker then takes one sample at once,
tells it how late it is, and skips the deadlines it missed instead of replaying them. The clock
and the wait are injectable, so tests drive it without sleeping; ``stop()`` joins the thread, so
a front end that switches sources can prove only one sampler thread is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: what a tick returns: seconds until the next one (None: the source has ended, stop)
Tick = Callable[[float], "float | None"]


def late_tolerance(interval: float) -> float:
    """How late a sample may start before it counts (and shows) as late."""
    return max(0.05, 0.1 * interval)


def next_due(due: float, pace: float, now: float, interval: float) -> float:
    """The next deadline after a sample that was due at ``due``: ``pace`` on, missed deadlines skipped."""
    due += pace
    if now > due:  # overran: skip the deadlines already missed, sample at once (it will be late)
        step = max(interval, 1e-3)
        due += ((now - due) // step) * step
    return due


class Ticker:
    """Calls ``tick(late_seconds)`` on deadlines ``interval`` apart, in its own thread.

    ``tick`` returns the pace to the next deadline (a replay paces itself; a live source returns
    the interval) or None to stop. ``wake()`` re-evaluates the deadline at once (after a change of
    interval, a pause, a re-discovery request). ``paused`` holds the ticks without losing the thread.
    """

    def __init__(
        self,
        tick: Tick,
        interval: float,
        *,
        name: str = "numatop-llm-sampler",
        clock: Callable[[], float] = time.monotonic,
        first_in: float = 0.0,
    ) -> None:
        self._tick = tick
        self.interval = interval
        self.name = name
        self.clock = clock
        self.paused = False
        self.first_in = first_in
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: ticks taken, and ticks that started late (the sampler was starved)
        self.ticks = 0
        self.late_ticks = 0
        self.failure: BaseException | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> Ticker:
        if self._thread is not None:
            raise RuntimeError("a ticker starts once")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop and join the thread; True when it has ended (a tick in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
            return not t.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        due = self.clock() + self.first_in
        while not self._stop.is_set():
            wait = due - self.clock()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                if self._stop.is_set():
                    return
                if self.paused:
                    due = self.clock() + self.interval
                    continue
                if self.clock() < due - 0.001:
                    continue  # woken early (a change of interval): wait for the deadline again
            elif self.paused:
                due = self.clock() + self.interval
                continue
            late = self.clock() - due
            is_late = late > late_tolerance(self.interval)
            self.ticks += 1
            if is_late:
                self.late_ticks += 1
            try:
                pace = self._tick(late if is_late else 0.0)
            except Exception as exc:
                self.failure = exc
                pace = self.interval
            if pace is None:
                return
            due = next_due(due, pace, self.clock(), self.interval)
