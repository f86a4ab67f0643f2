"""``TimeTravelWorker``: a :class:`~amqp_worker.SimpleWorker` whose clock a test moves forward.

Left alone it is a ``SimpleWorker`` on the wall clock (the contract suite runs
it as a third implementation, so it behaves like ``AMQPWorker``).
:meth:`~TimeTravelWorker.advance` moves its clock forward at once and runs,
in due order, everything that falls due on the way: delayed jobs, retry
backoff and schedule ticks. While they run the clock stands still at their
due time, so what a job sees and what it enqueues are exact; after
``advance`` the clock flows on from its target. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from amqp_worker._core.hooks import JobEvent
from amqp_worker._memory.worker import SimpleWorker, _Entry
from amqp_worker.errors import AmqpWorkerError

__all__ = ["JobsFailed", "TimeTravelWorker"]


class JobsFailed(AmqpWorkerError):
    """Jobs failed for good (parked) since the last :meth:`TimeTravelWorker.drain`.

    ``failures`` holds the events of the parked jobs; the first error is the cause.
    """

    def __init__(self, failures: list[JobEvent]) -> None:
        self.failures = failures
        names = ", ".join(f"{event.handler} ({event.job_id})" for event in failures)
        super().__init__(f"{len(failures)} job(s) failed for good: {names}")


class TimeTravelWorker(SimpleWorker):
    """A ``SimpleWorker`` on a clock the test controls; see :meth:`advance` and :meth:`drain`.

    Failed attempts are recorded through this worker's hooks; a copy made
    by ``with_options`` reports to the original.
    """

    def __init__(self, **options: Any) -> None:
        """Takes :class:`~amqp_worker.SimpleWorker`'s options; starts at the wall clock's time."""
        # Before SimpleWorker's __init__, which reads the clock.
        self._offset = timedelta(0)
        self._pinned: datetime | None = None
        super().__init__(**options)
        # The due time of each entry in SimpleWorker's _timers, on this worker's clock.
        self._due_at: dict[int, datetime] = {}
        self._failures: list[JobEvent] = []
        self.hooks.on_failure(self._failures.append)
        self.hooks.on_parked(self._failures.append)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<TimeTravelWorker {state} now={self.now().isoformat()}>"

    def now(self) -> datetime:
        """The worker's time: the wall clock plus every :meth:`advance` so far."""
        return self._now()

    def _now(self) -> datetime:
        if self._pinned is not None:
            return self._pinned
        return super()._now() + self._offset

    def _move_to(self, when: datetime) -> None:
        """Stand the clock at ``when`` (never backwards) until :meth:`_unpin`."""
        now = self._now()
        self._pinned = max(now, when)

    def _unpin(self) -> None:
        """Let the clock flow with the wall clock again, from where it stands."""
        if self._pinned is not None:
            self._offset = self._pinned - super()._now()
            self._pinned = None

    # -- delayed entries on the worker's clock ------------------------------------

    def _place(self, entry: _Entry, delay_s: float) -> int | None:
        due = self._now() + timedelta(seconds=delay_s)  # the time it was placed, plus the delay
        token = super()._place(entry, delay_s)
        if token is not None:
            self._due_at[token] = due
        return token

    def _due(self, token: int) -> None:
        del self._due_at[token]
        super()._due(token)

    def _unplace(self, token: int) -> _Entry:
        del self._due_at[token]
        return super()._unplace(token)

    def _release_due(self) -> None:
        """Run every delayed entry due by now, soonest first."""
        now = self._now()
        for token, due in sorted(self._due_at.items(), key=lambda item: item[1]):
            if due <= now:
                self._timers[token][0].cancel()
                self._due(token)

    def _rearm(self) -> None:
        """Set the wall-clock timers of entries still delayed to their time on the new clock."""
        loop = asyncio.get_running_loop()
        now = self._now()
        for token, due in self._due_at.items():
            timer, entry = self._timers[token]
            timer.cancel()
            wait_s = max(0.0, (due - now).total_seconds())
            self._timers[token] = (loop.call_later(wait_s, self._due, token), entry)

    async def _end(self, was_running: bool, timeout_s: float | None) -> None:
        await super()._end(was_running, timeout_s)
        # stop() drops delayed entries with their timers: their due times go too.
        self._due_at = {t: due for t, due in self._due_at.items() if t in self._timers}

    # -- what tests call ----------------------------------------------------------

    async def advance(self, by: timedelta | float, *, raise_errors: bool = True) -> list[JobEvent]:
        """Move the clock ``by`` forward (seconds if a number), running all that falls due.

        Delayed jobs, retries and schedule ticks due in that span run in due
        order, each with the clock at its due time, and what they enqueue is
        placed from then. Returns like :meth:`drain` once nothing is left to
        run; needs a started worker.
        """
        span = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if span < timedelta(0):
            raise ValueError("time only moves forward: advance() needs a delay >= 0")
        if not self.running:
            raise RuntimeError("advance() needs a started worker: await worker.start() first")
        target = self._now() + span
        ticking = self._ticking is not None
        if self._ticking is not None:
            # Ticks are fired below, at their times; the wall-clock ticker waits meanwhile.
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking
        # The clock stands at each due time while what is due then runs.
        self._move_to(self._now())
        try:
            while True:
                await self._pool.idle()
                step = self._next_due_including_ticks(ticking)
                if step is None or step > target:
                    break
                self._move_to(step)
                if ticking:
                    await self._ticker.fire_due(self._fired, self._led_since)
                self._release_due()
            self._move_to(target)
            self._release_due()
            await self._pool.idle()
        finally:
            self._unpin()
            self._rearm()
            if ticking and self.running:
                self._start_ticking()
        return self._report(raise_errors)

    def _next_due_including_ticks(self, ticking: bool) -> datetime | None:
        soonest = min(self._due_at.values(), default=None)
        if ticking:
            tick = self._now() + timedelta(
                seconds=self._ticker.wait_s(self._fired, self._led_since)
            )
            soonest = tick if soonest is None else min(soonest, tick)
        return soonest

    async def drain(self, *, raise_errors: bool = True) -> list[JobEvent]:
        """Wait until no job is ready or running; return the failed attempts since the last call.

        Delayed jobs keep waiting for their time (:meth:`advance`). With
        ``raise_errors`` (the default) a job that failed for good (parked)
        raises: its own exception if it was the only one, else
        :class:`JobsFailed` listing them; a job parked because it was
        cancelled does not raise. The list holds one ``on_failure`` event per
        failed attempt and one ``on_parked`` event per parked job.
        """
        await self._pool.idle()
        return self._report(raise_errors)

    def _report(self, raise_errors: bool) -> list[JobEvent]:
        failures, self._failures[:] = list(self._failures), []
        # A job parked because the test cancelled it is what the test asked for: listed,
        # never raised.
        parked = [
            event
            for event in failures
            if event.moment == "on_parked" and event.reason != "cancelled"
        ]
        if raise_errors and parked:
            if len(parked) == 1 and parked[0].error is not None:
                raise parked[0].error
            raise JobsFailed(parked) from parked[0].error
        return failures
