"""Unique jobs: one live job per ``Job.unique_key``, whatever the worker (docs/controls.md).

:class:`UniqueJobs` is a base of :class:`~amqp_worker._core.base.BaseWorker`,
like :class:`~amqp_worker._core.workflow_worker.WorkflowWorker`: it adds the
behaviour without growing the worker. The lock itself is the transport's
:class:`UniqueLocks` (a dict in memory, a lock queue on RabbitMQ).

The semantics, written once:

- A job with ``unique_key`` takes the key's lock when it is enqueued
  (``perform``, ``perform_at``, ``perform_in``, ``perform_many``, a chain's
  next step, a group's members). If the key is live, the enqueue raises
  :class:`~amqp_worker.errors.DuplicateJob` and nothing is enqueued.
- The lock is held while the job is queued, delayed, running or waiting for
  a retry (a retry is not an enqueue: it keeps the lock), and released once
  the job's success or park is settled. ``unique_for_s`` (the job's, else the
  worker's) bounds it from the enqueue: a job that never finishes (deleted
  by hand, lost with a broker) holds its key no longer than that.
- A lock is released only by the job that holds it (its id), so a job that
  finishes after its window passed never frees a key another job took since.
- If the enqueue fails after the lock was taken, the lock is released.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from amqp_worker.errors import PublishError

from .job import Job

__all__ = [
    "MAX_UNIQUE_FOR_S",
    "UniqueJobs",
    "UniqueLocks",
    "check_unique_for",
    "lock_deadline",
    "lock_window_s",
]

logger = logging.getLogger("amqp_worker")

T = TypeVar("T")

#: The longest window a lock may have, in seconds: 30 days. A bound, so that on
#: RabbitMQ a lock queue's ``x-expires`` can be longer than any token it holds.
MAX_UNIQUE_FOR_S = 30 * 24 * 3600.0


def check_unique_for(value: float) -> float:
    """``unique_for_s`` as a worker setting: a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("unique_for_s must be a number of seconds")
    if not 0 < value <= MAX_UNIQUE_FOR_S:
        raise ValueError(f"unique_for_s must be > 0 and at most 30 days, got {value}")
    return float(value)


def lock_deadline(job: Job, default_for_s: float) -> datetime:
    """When ``job``'s lock lapses: its enqueue time plus :func:`lock_window_s`."""
    return job.enqueued_at + timedelta(seconds=lock_window_s(job, default_for_s))


def lock_window_s(job: Job, default_for_s: float) -> float:
    """``job.unique_for_s``, else ``default_for_s``; ``ValueError`` if over 30 days."""
    window_s = job.unique_for_s if job.unique_for_s is not None else default_for_s
    if window_s > MAX_UNIQUE_FOR_S:
        raise ValueError(f"job {job.id}: unique_for_s may be at most 30 days, got {window_s}")
    return window_s


class UniqueLocks(Protocol):
    """A transport's store of unique-key locks, shared by every publisher of one worker name."""

    async def take(self, job: Job) -> None:
        """Lock ``job.unique_key`` for ``job``; :class:`DuplicateJob` if it is live."""
        ...

    async def take_all(self, jobs: Sequence[Job]) -> None:
        """Lock the keys of all of ``jobs`` (each has one), or none: the first live one raises."""
        ...

    async def release(self, job: Job) -> None:
        """Free ``job.unique_key`` if ``job`` holds it; never raises for a broker error."""
        ...


class UniqueJobs(abc.ABC):
    """The unique-key half of every worker: lock before the enqueue, release after the end."""

    #: Set by each worker's constructor.
    _unique_locks: UniqueLocks

    @abc.abstractmethod
    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str: ...

    async def _enqueue_unique(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        """:meth:`_enqueue`, holding ``job``'s unique key first if it has one."""
        if job.unique_key is None:
            return await self._enqueue(job, delay_s, headers)
        await self._unique_locks.take(job)
        try:
            return await self._enqueue(job, delay_s, headers)
        except BaseException:
            await self._release_unshielded(job)
            raise

    async def _enqueue_many_unique(
        self, jobs: Sequence[Job], publish: Callable[[], Awaitable[T]]
    ) -> T:
        """``publish()`` a batch, holding the keys of its unique jobs first (all or none).

        A :class:`~amqp_worker.errors.PublishError` releases the keys of the
        jobs it names; any other error releases them all.
        """
        unique = [job for job in jobs if job.unique_key is not None]
        if not unique:
            return await publish()
        await self._unique_locks.take_all(unique)
        try:
            return await publish()
        except PublishError as exc:
            failed = set(exc.job_ids)
            for job in unique:
                if job.id in failed:
                    await self._release_unshielded(job)
            raise
        except BaseException:
            for job in unique:
                await self._release_unshielded(job)
            raise

    async def _unique_finished(self, job: Job | None) -> None:
        """``job`` succeeded or was parked, and that is settled: free its key."""
        if job is not None and job.unique_key is not None:
            await self._unique_locks.release(job)

    async def _release_unshielded(self, job: Job) -> None:
        # Also when the enqueue was cancelled: the release must still happen, so it
        # runs in a task of its own that the caller's cancellation does not reach.
        release = asyncio.ensure_future(self._unique_locks.release(job))
        try:
            await asyncio.shield(release)
        except asyncio.CancelledError:
            logger.debug("cancelled while releasing unique key %r; it goes on", job.unique_key)
            raise
