"""Unique-key locks in memory: key → (holder's job id, deadline) on the worker's own clock.

The clock is the worker's ``_now``, so a TimeTravelWorker's :meth:`advance`
moves windows too. Nothing here awaits, so a check and a take can never be
split by another task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from amqp_worker._core.job import Job
from amqp_worker._core.unique import lock_deadline
from amqp_worker.errors import DuplicateJob

__all__ = ["MemoryLocks"]


class MemoryLocks:
    """The :class:`~amqp_worker._core.unique.UniqueLocks` of a SimpleWorker."""

    def __init__(self, clock: Callable[[], datetime], default_for_s: float) -> None:
        self._clock = clock
        self._default_for_s = default_for_s
        self._held: dict[str, tuple[str, datetime]] = {}

    def __len__(self) -> int:
        """How many keys are live now."""
        now = self._clock()
        return sum(1 for _, deadline in self._held.values() if deadline > now)

    def check(self, jobs: Sequence[Job]) -> None:
        """Raise :class:`DuplicateJob` for the first key of ``jobs`` that is live, or repeated."""
        now = self._clock()
        seen: set[str] = set()
        for job in jobs:
            key = job.unique_key
            if key is None:
                continue
            held = self._held.get(key)
            if key in seen or (held is not None and held[1] > now):
                raise DuplicateJob(key)
            seen.add(key)

    async def take(self, job: Job) -> None:
        self.check([job])
        assert job.unique_key is not None
        self._held[job.unique_key] = (job.id, lock_deadline(job, self._default_for_s))

    async def take_all(self, jobs: Sequence[Job]) -> None:
        self.check(jobs)
        for job in jobs:
            await self.take(job)

    async def release(self, job: Job) -> None:
        key = job.unique_key
        if key is not None and self._held.get(key, ("", None))[0] == job.id:
            del self._held[key]
