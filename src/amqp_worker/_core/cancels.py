"""Cancel, in one worker's memory: the ids cancelled lately, and the attempts a cancel reaches.

Shared by every worker (docs/controls.md#cancel):

- :class:`CancelBook` remembers each cancelled id for ``ttl_s`` after its
  cancel (at most :data:`MAX_REMEMBERED` ids). The start gate asks it once per
  job: one dict lookup.
- Each attempt past the gate is a :class:`RunningAttempt` in the book while it
  runs. A cancel of its id marks it, sets its :attr:`~RunningAttempt.signal`
  (what a handler's ``cancelled`` parameter receives) and, while an async
  handler runs, cancels that handler's task. The attempt then ends as
  :class:`~amqp_worker.errors.JobCancelled`, whatever the handler did: the
  job is parked ``cancelled``, never counted a success, never retried.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

from amqp_worker.errors import JobCancelled

from .defaults import DEFAULT_CANCEL_TTL_S
from .job import validate_name

__all__ = ["MAX_REMEMBERED", "CancelBook", "RunningAttempt", "check_job_ids", "refused_error"]

#: The most cancelled ids one worker remembers; past it the oldest are forgotten early
#: (about 100 bytes each: 100 MB at most).
MAX_REMEMBERED = 1_000_000


def check_job_ids(ids: Iterable[object]) -> list[str]:
    """The ids to cancel, each checked as a job id is (a non-empty name of at most 255 bytes)."""
    checked: list[str] = []
    for job_id in ids:
        if not isinstance(job_id, str):
            raise TypeError(f"a job id is a str, got {type(job_id).__name__}")
        try:
            checked.append(validate_name(job_id))
        except ValueError as exc:
            raise ValueError(f"job id {job_id[:60]!r} {exc}") from None
    return checked


def refused_error(job_id: str) -> JobCancelled:
    """The error of a job the start gate refuses because it was cancelled."""
    return JobCancelled(f"job {job_id} was cancelled before it started; its handler did not run")


class RunningAttempt:
    """One attempt of a job, from the start gate until its handler has returned."""

    __slots__ = ("_interrupted", "_signal", "_task", "job_id", "requested")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.requested = False
        """Whether the job was cancelled while this attempt ran."""
        self._signal: threading.Event | None = None
        self._task: asyncio.Task[object] | None = None
        self._interrupted = False

    @property
    def signal(self) -> threading.Event:
        """Set once this attempt's job is cancelled: a sync handler's cooperative cue.

        Made on first use (only handlers with a ``cancelled`` parameter ask), so an
        attempt costs no lock otherwise.
        """
        if self._signal is None:
            self._signal = threading.Event()
            if self.requested:
                self._signal.set()
        return self._signal

    def enter(self, task: asyncio.Task[object] | None) -> None:
        """The handler starts now; ``task`` (an async handler's) may be cancelled until :meth:`leave`."""
        self._task = task

    def leave(self, *, raised_cancelled: bool = False) -> bool:
        """The handler has returned or raised: whether the attempt ends as cancelled.

        ``raised_cancelled``: it raised ``asyncio.CancelledError``. That is this
        cancel's only if this attempt interrupted the task and nothing else
        (``stop()``) cancelled it too; otherwise it propagates (the job is handed back).
        """
        task, self._task = self._task, None
        if self._interrupted and task is not None:
            # The interruption is over: later awaits of this task must not be cancelled.
            others = task.uncancel()
            if raised_cancelled:
                return others == 0
        elif raised_cancelled:
            return False
        return self.requested

    def cancel(self) -> None:
        """Tell this attempt that its job was cancelled (from the event loop's thread)."""
        self.requested = True
        if self._signal is not None:
            self._signal.set()
        task = self._task
        # Only while the async handler runs: a CancelledError in a hook or the ack would
        # hand the job back instead of parking it. Never from its own task (a handler
        # cancelling its own job): that one ends as cancelled when it returns.
        if task is not None and not self._interrupted and task is not asyncio.current_task():
            self._interrupted = True
            task.cancel(f"job {self.job_id} was cancelled")

    def error(self) -> JobCancelled:
        """The error this attempt ends with, once its job was cancelled."""
        if self._interrupted:
            how = "its handler was interrupted"
        else:
            how = "its handler finished after the cancel, and the attempt counts as cancelled"
        return JobCancelled(f"job {self.job_id} was cancelled while it ran; {how}")


class CancelBook:
    """The ids cancelled in the last ``ttl_s`` seconds, and the attempts running now."""

    def __init__(self, ttl_s: float = DEFAULT_CANCEL_TTL_S) -> None:
        self.ttl_s = ttl_s
        # id -> when it was cancelled (time.time()), oldest first.
        self._ids: OrderedDict[str, float] = OrderedDict()
        self._running: dict[str, list[RunningAttempt]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, job_id: str) -> bool:
        """Whether ``job_id`` was cancelled within ``ttl_s``: the start gate's one lookup."""
        at_s = self._ids.get(job_id)
        return at_s is not None and time.time() - at_s < self.ttl_s

    def add(self, job_id: str, cancelled_at_s: float | None = None) -> None:
        """Remember that ``job_id`` was cancelled (at ``cancelled_at_s``, Unix seconds;
        None: now) and tell its running attempts. Idempotent: the first time is kept."""
        now_s = time.time()
        at_s = now_s if cancelled_at_s is None else cancelled_at_s
        if now_s - at_s >= self.ttl_s:
            return  # older than the retention: forgotten here as on the broker
        if job_id not in self._ids:
            # Appended: ids leave from the head once old, so one that arrives out of
            # order is kept a little longer than ttl_s, never forgotten early.
            self._ids[job_id] = at_s
            self._forget_old(now_s)
        for attempt in self._running.get(job_id, ()):
            attempt.cancel()

    def _forget_old(self, now_s: float) -> None:
        ids = self._ids
        while ids:
            job_id, at_s = next(iter(ids.items()))
            if now_s - at_s < self.ttl_s and len(ids) <= MAX_REMEMBERED:
                return
            del ids[job_id]

    def begin(self, job_id: str) -> RunningAttempt:
        """An attempt of ``job_id`` starts: a cancel of its id reaches it until :meth:`end`."""
        attempt = RunningAttempt(job_id)
        running = self._running.get(job_id)
        if running is None:
            self._running[job_id] = [attempt]
        else:
            running.append(attempt)  # two copies of one job at once (at-least-once)
        return attempt

    def end(self, attempt: RunningAttempt) -> None:
        """``attempt`` is over; a cancel no longer reaches it."""
        running = self._running[attempt.job_id]
        if len(running) == 1:
            del self._running[attempt.job_id]
        else:
            running.remove(attempt)

    @property
    def running(self) -> int:
        """Attempts running now (that a cancel would reach)."""
        return sum(len(attempts) for attempts in self._running.values())
