"""The loop-stall watchdog: a WARNING when something blocks a worker's event loop.

Sync handlers run in threads (:mod:`~amqp_worker._core.handlers`), so they may block
as long as they like. An *async* handler runs on the event loop, and one that
blocks it (``time.sleep``, a sync HTTP client, a long computation) stops
everything else there: other jobs, timers, acks, and the broker connection's
heartbeats. A stall near ``heartbeat_s`` lets RabbitMQ close the connection.
A blocked loop cannot report itself, so a daemon thread watches it:

- On the loop, a timer runs every ``interval`` (a quarter of the threshold)
  and stamps when the next run is due.
- The thread wakes every ``interval``. A stamp more than ``threshold`` seconds
  overdue means the loop has run nothing for at least that long: it logs
  **one WARNING per stall**, naming the async handler the loop is running
  (the loop's current task, when that is a handler of this worker; otherwise
  every async handler in progress), its job id and queue, how long the loop
  has been blocked, and the line the loop thread is executing.
- When the loop runs the timer again, one INFO line says how long the stall
  lasted.

The worker keeps the record of its async handlers in progress
(:data:`OnLoop`): one dict entry per attempt, added and removed by
:func:`~amqp_worker._core.attempt.run_attempt`, and read only on a stall.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
from typing import Any, NamedTuple

__all__ = [
    "LoopWatchdog",
    "OnLoop",
    "RunningHandler",
    "check_stall_threshold",
]

logger = logging.getLogger("amqp_worker")

#: Named in a warning at most; the rest are counted.
_MAX_NAMED = 5


class RunningHandler(NamedTuple):
    """An async handler in progress on the loop."""

    handler: str
    job_id: str
    queue: str
    started: float
    """``time.perf_counter()`` when the attempt began."""


#: The async handlers in progress on a worker's loop, by the task that runs each.
OnLoop = dict["asyncio.Task[Any]", RunningHandler]


def check_stall_threshold(value: float) -> float:
    """Validate ``loop_stall_warn_s``: a finite number of seconds, at least 0 (0 disables)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"loop_stall_warn_s must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"loop_stall_warn_s must be finite and >= 0, got {value!r}")
    return float(value)


class LoopWatchdog:
    """Watches one event loop from a daemon thread; see the module docstring.

    :meth:`start` on the loop it watches; :meth:`stop` on the same loop, which
    joins the thread.
    """

    def __init__(self, threshold_s: float, on_loop: OnLoop) -> None:
        if not threshold_s > 0:
            raise ValueError(f"threshold_s must be > 0, got {threshold_s!r}")
        self.threshold_s = threshold_s
        self._on_loop = on_loop
        # Detection lags a stall by at most one interval; a quarter of the
        # threshold keeps that small while the timer stays negligible (4 runs
        # per threshold).
        self._interval = max(threshold_s / 4, 0.005)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._due = 0.0
        # (due stamp, lateness) of the last timer run that came after a stall:
        # written only on the loop, read by the thread. A tuple, assigned whole.
        self._stall_end: tuple[float, float] = (0.0, 0.0)
        self._handle: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer on the running loop and the watching thread."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._due = time.perf_counter() + self._interval
        self._handle = loop.call_later(self._interval, self._beat)
        self._thread = threading.Thread(
            target=self._watch, name="amqp-worker-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer and the thread, and join it (it wakes at once)."""
        self._stopping.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._thread is not None:
            # At most the time of one report it may be writing; never a full interval.
            self._thread.join(timeout=5)
            self._thread = None

    # -- on the loop ------------------------------------------------------------

    def _beat(self) -> None:
        now = time.perf_counter()
        late = now - self._due
        if late > self.threshold_s:
            self._stall_end = (self._due, late)
        self._due = now + self._interval
        if not self._stopping.is_set():
            assert self._loop is not None
            self._handle = self._loop.call_later(self._interval, self._beat)

    # -- on the thread ----------------------------------------------------------

    def _watch(self) -> None:
        loop = self._loop
        assert loop is not None
        warned: float | None = None  # the due stamp of the stall already reported
        worst = 0.0
        culprit = ""
        while not self._stopping.wait(self._interval):
            if loop.is_closed():
                return  # the loop ended without stop(): nothing left to watch
            due = self._due
            try:
                if warned is not None and due != warned:
                    self._recovered(warned, worst, culprit)
                    warned = None
                late = time.perf_counter() - due
                # A loop that is not running (between run_until_complete calls)
                # runs no timers either: not a stall.
                if late > self.threshold_s and loop.is_running():
                    worst = late
                    if warned != due:
                        warned = due
                        culprit = self._warn(loop, late)
            except Exception:  # a bug here must not end the watch silently
                logger.exception("loop watchdog: could not report a stall")
        if warned is not None:
            # stop() runs on the loop, so a stall already reported has ended; say so even
            # if this thread (slow on a busy machine) had not looked since.
            self._recovered(warned, worst, culprit)

    def _warn(self, loop: asyncio.AbstractEventLoop, late: float) -> str:
        """Log the one WARNING of a stall; return what it blamed, for the recovery line."""
        # Safe from this thread: the dict is copied in one step under the GIL
        # (tasks hash by identity, no Python code runs), and it is not
        # changing anyway while the loop is blocked.
        running = self._on_loop.copy()
        current = asyncio.current_task(loop)
        where = self._where()
        this = running.get(current) if current is not None else None
        extra: dict[str, Any] = {"stall_s": round(late, 3)}
        if this is not None:
            culprit = f"async handler {this.handler!r} (job {this.job_id}, queue {this.queue})"
            extra.update(handler=this.handler, job_id=this.job_id, queue=this.queue)
            blame = (
                f"{culprit} is running on it{where}. Nothing else runs meanwhile (other jobs, "
                "timers, the broker's heartbeats): make a handler that blocks sync (def) to run "
                "it in a thread, or await its blocking calls via asyncio.to_thread"
            )
        else:
            culprit = ""
            blame = f"not in a handler's own task{where}"
            if running:
                oldest = sorted(running.values(), key=lambda r: r.started)
                names = ", ".join(
                    f"{r.handler!r} (job {r.job_id}, queue {r.queue})" for r in oldest[:_MAX_NAMED]
                )
                more = len(oldest) - _MAX_NAMED
                names += f" and {more} more" if more > 0 else ""
                extra.update(handler=",".join(sorted({r.handler for r in oldest})))
                blame += f"; async handlers in progress: {names}"
            else:
                blame += "; no async handler of this worker is in progress"
        logger.warning(
            "event loop blocked for %.2fs so far (loop_stall_warn_s=%g): %s",
            late,
            self.threshold_s,
            blame,
            extra=extra,
        )
        return culprit

    def _where(self) -> str:
        """Where the loop's thread is now, as ``", at file:line in function"``."""
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return ""
        code = frame.f_code
        return f", at {code.co_filename}:{frame.f_lineno} in {code.co_name}"

    def _recovered(self, warned: float, worst: float, culprit: str) -> None:
        due, late = self._stall_end
        # The loop's own measure is exact; the thread's last look is a lower bound.
        stall = late if due == warned else worst
        logger.info(
            "event loop ran again after blocking for %.2fs%s",
            stall,
            f": {culprit}" if culprit else "",
            extra={"stall_s": round(stall, 3)},
        )
