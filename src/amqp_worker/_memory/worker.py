"""``SimpleWorker``: the in-process worker, for development and tests.

It needs no broker and follows the same contract as
:class:`~amqp_worker.AMQPWorker` (retries, timeouts and failed jobs included),
but **it persists nothing**: jobs live in this process's memory, and whatever
is still queued or delayed when :meth:`SimpleWorker.stop` returns (or the
process dies) is gone. Unlike Buffalo's ``worker.Simple``, it says so:
``stop()`` logs a WARNING with the number of jobs it dropped. Parked jobs are
kept in memory until purged or the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Self

from amqp_worker._core.attempt import tell_parked
from amqp_worker._core.base import BaseWorker
from amqp_worker._core.controls import DUE_HEADER
from amqp_worker._core.defaults import (
    DEFAULT_LOOP_STALL_WARN_S,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RESULT_TTL_S,
    DEFAULT_UNIQUE_FOR_S,
)
from amqp_worker._core.failures import AttemptRecord, FailedJob, FailureReason, failure_headers
from amqp_worker._core.groups import GroupStatus
from amqp_worker._core.interfaces import FailedJobs
from amqp_worker._core.job import Job, check_size
from amqp_worker._core.results import JobResult, ResultSource
from amqp_worker._core.retry import RetryPolicy
from amqp_worker._core.ticker import Ticker
from amqp_worker._core.unique import check_unique_for
from amqp_worker._core.workflow import Group
from amqp_worker.errors import ConfigurationError, HandlerNotRegistered

from .failed_jobs import MemoryFailedJobs
from .limits import MemoryLimits
from .partitions import PartitionLocks
from .unique import MemoryLocks
from .workflows import MemoryGroups, MemoryResults

__all__ = ["SimpleWorker"]

logger = logging.getLogger("amqp_worker")


@dataclass(slots=True)
class _Entry:
    """A job waiting in memory, with the failures of its earlier attempts."""

    job: Job
    headers: dict[str, Any] = field(default_factory=dict)
    history: list[AttemptRecord] = field(default_factory=list)


class SimpleWorker(BaseWorker[_Entry]):
    """Runs jobs in this process with asyncio; persists nothing.

    - Jobs performed before :meth:`start` wait in memory and run after it.
    - Delays and retry backoff use event-loop timers, not polling.
    - :meth:`perform` of an unregistered handler raises
      :class:`~amqp_worker.errors.HandlerNotRegistered`: this is the only
      worker that knows every handler at publish time.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        loop_stall_warn_s: float = DEFAULT_LOOP_STALL_WARN_S,
        result_ttl_s: float = DEFAULT_RESULT_TTL_S,
        unique_for_s: float = DEFAULT_UNIQUE_FOR_S,
    ) -> None:
        super().__init__(
            max_concurrency=max_concurrency,
            retry=retry,
            timeout_s=timeout_s,
            loop_stall_warn_s=loop_stall_warn_s,
        )
        if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int):
            raise TypeError("max_message_bytes must be an int")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be at least 1, got {max_message_bytes}")
        self.max_message_bytes = self._max_message_bytes = max_message_bytes
        """Largest job JSON ``perform*`` accepts, as on an AMQPWorker."""
        if isinstance(result_ttl_s, bool) or not isinstance(result_ttl_s, int | float):
            raise TypeError("result_ttl_s must be a number of seconds")
        if not result_ttl_s > 0:
            raise ValueError(f"result_ttl_s must be > 0, got {result_ttl_s}")
        self.result_ttl_s = float(result_ttl_s)
        """How long a kept result stays readable, in seconds."""
        self.unique_for_s = check_unique_for(unique_for_s)
        """How long a ``unique_key`` lock lasts at most, for jobs without ``unique_for_s``."""
        self._unique_locks = self._locks = MemoryLocks(self._now, self.unique_for_s)
        self._results = MemoryResults(self.result_ttl_s)
        self._groups = MemoryGroups(self.perform)
        self._pending: deque[_Entry] = deque()
        self._ready: list[tuple[int, int, _Entry]] = []
        self._partitions = PartitionLocks()
        self._limits = MemoryLimits()
        self._timers: dict[int, tuple[asyncio.TimerHandle, _Entry]] = {}
        self._tokens = itertools.count()
        self._dropped = 0
        self._ticking: asyncio.Future[None] | None = None
        self._fired: dict[str, datetime] = {}
        self._led_since = self._now()
        self._ticker = Ticker(
            lambda: self._registry.schedules,
            enqueue=self.perform,
            # Looked up per tick: with_options() gives the copy hooks of its own.
            on_tick=lambda event: self.hooks.ticked(event),
            clock=self._now,
        )
        self._failed = MemoryFailedJobs(lambda job, headers: self._accept(_Entry(job, headers)))

    def _copy(self, overrides: dict[str, Any]) -> Self:
        options: dict[str, Any] = {
            "max_concurrency": self.max_concurrency,
            "retry": self.retry,
            "timeout_s": self.timeout_s,
            "max_message_bytes": self.max_message_bytes,
            "loop_stall_warn_s": self._loop_stall_warn_s,
            "result_ttl_s": self.result_ttl_s,
            "unique_for_s": self.unique_for_s,
        }
        unknown = sorted(set(overrides) - set(options))
        if unknown:
            raise ConfigurationError(
                f"SimpleWorker takes {', '.join(options)}; not {', '.join(unknown)}"
            )
        return type(self)(**{**options, **overrides})

    @property
    def failed(self) -> FailedJobs:
        """The jobs this worker parked, kept in memory: list, show, retry, purge."""
        return self._failed

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SimpleWorker {state} max_concurrency={self.max_concurrency}>"

    # -- results and groups (kept in memory, like everything here) ----------------

    def _result_source(self) -> ResultSource:
        return self._results

    async def _store_result(self, record: JobResult) -> None:
        self._results.store(record)

    def _check_steps(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self._spec(job)  # every handler is known here: an unknown one fails now

    async def _open_group(self, group: Group) -> None:
        self._groups.open(group)

    async def _member_resolved(self, job: Job, queue: str, ok: bool, reason: str | None) -> None:
        await self._groups.resolved(job, ok, reason)

    async def group_status(self, group_id: str) -> GroupStatus:
        return self._groups.status(group_id)

    # -- enqueueing -------------------------------------------------------------

    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        self._spec(job)  # fail fast: an unknown handler could never run here
        check_size(job.id, len(job.to_json()), self.max_message_bytes)
        self._place(_Entry(job, headers), delay_s)
        return job.id

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue several jobs; all or none, as on RabbitMQ: sizes and unique keys first."""
        batch = list(jobs)
        for job in batch:
            if isinstance(job, Job):  # anything else is perform's TypeError to raise
                check_size(job.id, len(job.to_json()), self.max_message_bytes)
        # Then each perform takes its key: nothing awaits in between, so none is taken meanwhile.
        self._locks.check([job for job in batch if isinstance(job, Job)])
        return await super().perform_many(batch)

    def _place(self, entry: _Entry, delay_s: float) -> int | None:
        """Run ``entry`` now, or after ``delay_s`` on a loop timer; the timer's token, if any.

        A delayed entry carries its due time in ``aw-due-ms``, as on RabbitMQ
        (a handler's ``max_age_s`` counts from it); one placed now drops an earlier one.
        """
        if delay_s > 0 or DUE_HEADER in entry.headers:
            headers = {k: v for k, v in entry.headers.items() if k != DUE_HEADER}
            if delay_s > 0:
                due = self._now() + timedelta(seconds=delay_s)
                headers[DUE_HEADER] = round(due.timestamp() * 1000)
            entry = _Entry(entry.job, headers, entry.history)
        if delay_s <= 0:
            self._accept(entry)
            return None
        token = next(self._tokens)
        timer = asyncio.get_running_loop().call_later(delay_s, self._due, token)
        self._timers[token] = (timer, entry)
        return token

    def _due(self, token: int) -> None:
        _, entry = self._timers.pop(token)
        self._accept(entry)

    def _unplace(self, token: int) -> _Entry:
        """Take a delayed entry out before it is due: its timer will not fire."""
        timer, entry = self._timers.pop(token)
        timer.cancel()
        return entry

    async def _send_cancels(self, job_ids: list[str]) -> None:
        """In memory the book is the whole fleet; park queued and delayed copies now.

        A running copy was told by the book, and one waiting for a handler slot
        meets the start gate; the rest would wait (a delayed one, maybe for
        hours) before it showed as cancelled, so each goes through the start
        gate now, running or not: parked ``cancelled``.
        """
        wanted = set(job_ids)
        taken = [entry for entry in self._pending if entry.job.id in wanted]
        for entry in taken:
            self._pending.remove(entry)
        delayed = [t for t, (_, entry) in self._timers.items() if entry.job.id in wanted]
        taken += [self._unplace(token) for token in delayed]
        for entry in taken:
            job = entry.job
            await self._run(entry, job, job.queue, entry.headers, entry.history)

    def _accept(self, entry: _Entry) -> None:
        if self.running:
            self._submit(entry)
        else:
            self._pending.append(entry)

    def _submit(self, entry: _Entry) -> None:
        def dropped() -> None:
            self._dropped += 1

        # Ready entries wait in a heap, highest Job.priority first and in order within
        # one; each run takes the best entry when it gets a slot, so a job enqueued
        # later with a higher priority overtakes those still waiting (as on RabbitMQ).
        heapq.heappush(self._ready, (-(entry.job.priority or 0), next(self._tokens), entry))
        self._submit_run(self._run_best, dropped)

    async def _run_best(self) -> None:
        entry = heapq.heappop(self._ready)[2]
        job = entry.job
        key = job.partition_key
        # Its turn in its partition first, then its limits: a token taken while the job
        # still waited for its turn would let it start beside the next token's job.
        turn = (
            self._partitions.hold(job.queue, key) if key is not None else contextlib.nullcontext()
        )
        async with turn, self._limits.hold(self._registry.handlers.get(job.handler), job):
            await self._run(entry, job, job.queue, entry.headers, entry.history)

    # -- settling an attempt (the transport steps of BaseWorker._run) --------------

    async def _retry_later(
        self, delivery: _Entry, retry: Job, queue: str, delay_s: float, history: list[AttemptRecord]
    ) -> None:
        self._place(_Entry(retry, delivery.headers, history), delay_s)

    async def _park(
        self,
        delivery: _Entry,
        job: Job,
        queue: str,
        reason: FailureReason,
        error: BaseException,
        history: list[AttemptRecord],
    ) -> None:
        headers = failure_headers(reason, queue, error, history=history)
        record = FailedJob.from_message(job.to_json(), headers, job.id, queue)
        self._failed.park(record, delivery.headers)
        await self._unique_finished(job)
        logger.warning("job %s parked: %s", job.id, reason.value)
        await tell_parked(self.hooks, queue, job, job.id, reason, error, delivery.headers)

    # -- lifecycle ------------------------------------------------------------------

    async def _begin(self) -> None:
        while self._pending:
            self._submit(self._pending.popleft())
        if self._registry.schedules:
            self._led_since = self._now()
            self._start_ticking()

    def _start_ticking(self) -> None:
        # One process, one leader: the ticks fired are kept in memory across restarts.
        self._ticking = asyncio.ensure_future(self._ticker.run(self._fired, self._led_since))

    async def _enqueue_tick(self, job: Job) -> None:
        try:
            await self.perform(job)
        except HandlerNotRegistered as exc:
            # The tick counts as fired: a schedule whose handler is missing must not spin.
            logger.error("schedule tick %s not enqueued: %s", job.id, exc)

    async def _end(self, was_running: bool, timeout_s: float | None) -> None:
        ticking, self._ticking = self._ticking, None
        if ticking is not None:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
        if not was_running:
            return
        self._dropped = 0
        report = await self._drain(timeout_s)
        # Jobs enqueued while draining went to _pending; they are dropped too.
        dropped = self._dropped + len(self._pending) + len(self._timers)
        for timer, _ in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()
        self._ready.clear()
        if dropped or report.cancelled:
            logger.warning(
                "SimpleWorker stopped: dropped %d queued or delayed job(s) and cancelled %d "
                "running one(s); the in-process worker persists nothing",
                dropped,
                report.cancelled,
            )
