"""The loop that fires schedules: wait for the next tick, enqueue its job, record it.

Both workers run it. ``SimpleWorker`` runs it whenever it runs, with the
fired ticks in memory. ``AMQPWorker`` runs it only while its replica leads
(:mod:`amqp_worker._rabbitmq.schedule_leader`), and records each tick in the token it holds.

Order per tick: the job is enqueued (confirmed), *then* the tick is
recorded. A replica that dies between the two leaves the tick unrecorded,
and the next leader enqueues it again, with the same job id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from amqp_worker.errors import DuplicateJob

from .job import Job
from .schedule import Schedule

__all__ = ["Clock", "TickEvent", "Ticker", "utc_now"]

logger = logging.getLogger("amqp_worker")

Clock = Callable[[], datetime]
#: Sleep at most this long, so a wall clock that jumps is noticed.
MAX_SLEEP_S = 30.0
#: Wake this much after a tick, so a timer that fires a hair early never fires a tick early.
WAKE_AFTER_S = 0.001


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TickEvent:
    """One tick fired: which schedule, which tick, the job's id, and how late it was enqueued."""

    schedule: str
    tick: datetime
    job_id: str
    lateness_s: float


class Ticker:
    """Fires the ticks of ``schedules`` (read afresh on every pass) until cancelled.

    ``enqueue`` places a tick's job (and raises if it could not); ``record``
    stores the fired ticks; ``on_tick`` is told of each tick after it is recorded.
    """

    def __init__(
        self,
        schedules: Callable[[], Mapping[str, Schedule]],
        *,
        enqueue: Callable[[Job], Awaitable[object]],
        record: Callable[[Mapping[str, datetime]], Awaitable[None]] | None = None,
        on_tick: Callable[[TickEvent], None] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._schedules = schedules
        self._enqueue = enqueue
        self._record = record
        self._on_tick = on_tick
        self._clock = clock

    async def run(self, last_fired: dict[str, datetime], led_since: datetime) -> None:
        """Fire due ticks, sleep until the next one, forever; ``last_fired`` is updated in place."""
        while True:
            await self.fire_due(last_fired, led_since)
            await asyncio.sleep(self.wait_s(last_fired, led_since))

    async def fire_due(self, last_fired: dict[str, datetime], led_since: datetime) -> int:
        """Enqueue and record every tick due now; return how many."""
        fired = 0
        now = self._clock()
        for name, schedule in sorted(self._schedules().items()):
            for tick in schedule.due(last_fired.get(name), led_since, now):
                job = schedule.tick_job(tick)
                try:
                    await self._enqueue(job)
                except DuplicateJob as exc:
                    # A unique key still held by the last tick's job: this tick is skipped
                    # (it counts as fired), so ticks of a slow job never pile up.
                    logger.warning("schedule %s skipped its tick of %s: %s", name, tick, exc)
                last_fired[name] = tick
                if self._record is not None:
                    await self._record(last_fired)
                lateness_s = max(0.0, (self._clock() - tick).total_seconds())
                logger.info(
                    "schedule %s fired its tick of %s as job %s (%.3fs after the tick)",
                    name,
                    tick.isoformat(),
                    job.id,
                    lateness_s,
                    extra={"schedule": name, "job_id": job.id, "lateness_s": round(lateness_s, 6)},
                )
                if self._on_tick is not None:
                    self._on_tick(TickEvent(name, tick, job.id, lateness_s))
                fired += 1
        return fired

    def wait_s(self, last_fired: Mapping[str, datetime], led_since: datetime) -> float:
        """Seconds until the next tick of any schedule (at most :data:`MAX_SLEEP_S`)."""
        now = self._clock()
        soonest = MAX_SLEEP_S
        for name, schedule in self._schedules().items():
            after = max(last_fired.get(name, led_since), led_since, now)
            wait = (schedule.next_tick(after) - now).total_seconds() + WAKE_AFTER_S
            soonest = min(soonest, wait)
        return max(0.0, soonest)
