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
import itertools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

from .base import BaseWorker
from .defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_STOP_TIMEOUT_S
from .errors import ConfigurationError, FailedJobNotFound
from .failures import AttemptRecord, FailedJob, failure_headers
from .job import Job
from .retry import RetryPolicy

__all__ = ["SimpleWorker"]

logger = logging.getLogger("amqp_worker")


@dataclass(slots=True)
class _Entry:
    """A job waiting in memory, with the failures of its earlier attempts."""

    job: Job
    headers: dict[str, Any] = field(default_factory=dict)
    history: list[AttemptRecord] = field(default_factory=list)


class SimpleWorker(BaseWorker):
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
    ) -> None:
        super().__init__(max_concurrency=max_concurrency, retry=retry, timeout_s=timeout_s)
        self._pending: deque[_Entry] = deque()
        self._timers: dict[int, tuple[asyncio.TimerHandle, _Entry]] = {}
        self._tokens = itertools.count()
        self._dropped = 0
        self._failed: list[FailedJob] = []
        # The message headers of parked jobs (trace context, on_publish headers), by
        # job id, so a retried job carries them on as it would through RabbitMQ.
        self._parked_headers: dict[str, dict[str, Any]] = {}

    def _copy(self, overrides: dict[str, Any]) -> Self:
        unknown = sorted(set(overrides) - {"max_concurrency", "retry", "timeout_s"})
        if unknown:
            raise ConfigurationError(
                f"SimpleWorker takes max_concurrency, retry and timeout_s; not {', '.join(unknown)}"
            )
        options: dict[str, Any] = {
            "max_concurrency": self.max_concurrency,
            "retry": self.retry,
            "timeout_s": self.timeout_s,
        }
        return type(self)(**{**options, **overrides})

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<SimpleWorker {state} max_concurrency={self.max_concurrency}>"

    # -- enqueueing -------------------------------------------------------------

    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        self._spec(job)  # fail fast: an unknown handler could never run here
        self._place(_Entry(job, headers), delay_s)
        return job.id

    def _place(self, entry: _Entry, delay_s: float) -> None:
        if delay_s > 0:
            token = next(self._tokens)
            timer = asyncio.get_running_loop().call_later(delay_s, self._due, token)
            self._timers[token] = (timer, entry)
        else:
            self._accept(entry)

    def _due(self, token: int) -> None:
        _, entry = self._timers.pop(token)
        self._accept(entry)

    def _accept(self, entry: _Entry) -> None:
        if self._running:
            self._submit(entry)
        else:
            self._pending.append(entry)

    def _submit(self, entry: _Entry) -> None:
        def dropped() -> None:
            self._dropped += 1

        self._pool.submit(lambda: self._execute(entry), on_abandon=dropped)

    # -- running ------------------------------------------------------------------

    async def _execute(self, entry: _Entry) -> None:
        job = entry.job
        outcome = await self._attempt(job, job.queue, entry.headers)
        if outcome.error is None:
            return
        decision = self._decide(job, outcome.error)
        await self._failed_attempt(job, job.queue, outcome, decision, entry.headers)
        history = [*entry.history, AttemptRecord.of(job.attempt, outcome.error)]
        if decision.retry:
            retry = job.model_copy(update={"attempt": job.attempt + 1})
            self._place(_Entry(retry, entry.headers, history), decision.delay_s)
        else:
            headers = failure_headers(decision.reason, job.queue, outcome.error, history=history)
            self._failed.append(FailedJob.from_message(job.to_json(), headers, job.id, job.queue))
            self._parked_headers[job.id] = dict(entry.headers)
            logger.warning("job %s parked: %s", job.id, decision.reason.value)
            await self._parked(
                job.queue, job, job.id, decision.reason, outcome.error, entry.headers
            )
        await self._linger(outcome)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._pool.open()
        self._running = True
        while self._pending:
            self._submit(self._pending.popleft())

    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        if not self._running:
            return
        self._running = False
        self._dropped = 0
        report = await self._drain(timeout_s)
        # Jobs enqueued while draining went to _pending; they are dropped too.
        dropped = self._dropped + len(self._pending) + len(self._timers)
        for timer, _ in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._pending.clear()
        if dropped or report.cancelled:
            logger.warning(
                "SimpleWorker stopped: dropped %d queued or delayed job(s) and cancelled %d "
                "running one(s); the in-process worker persists nothing",
                dropped,
                report.cancelled,
            )

    # -- failed jobs ----------------------------------------------------------------

    async def failed_jobs(
        self, queue: str | None = None, limit: int | None = None
    ) -> list[FailedJob]:
        """Parked jobs, oldest first; of ``queue`` only if given."""
        found = [f for f in self._failed if queue is None or f.queue == queue]
        return found if limit is None else found[:limit]

    async def retry_failed(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> list[str]:
        """Enqueue parked jobs again with ``attempt`` reset; None retries all. Return their ids."""
        chosen = self._choose(ids, queue)
        moved: list[str] = []
        for failed in chosen:
            if failed.job is not None:
                fresh = failed.job.model_copy(
                    update={"attempt": 0, "enqueued_at": datetime.now(UTC)}
                )
                self._place(_Entry(fresh, self._parked_headers.get(failed.id, {})), 0)
                moved.append(failed.id)
            self._failed.remove(failed)
            self._parked_headers.pop(failed.id, None)
        return moved

    async def purge_failed(self, ids: Iterable[str] | None = None, queue: str | None = None) -> int:
        """Delete parked jobs; None deletes all (of ``queue``, if given). Return how many."""
        chosen = self._choose(ids, queue)
        for failed in chosen:
            self._failed.remove(failed)
            self._parked_headers.pop(failed.id, None)
        return len(chosen)

    def _choose(self, ids: Iterable[str] | None, queue: str | None) -> list[FailedJob]:
        pool = [f for f in self._failed if queue is None or f.queue == queue]
        if ids is None:
            return pool
        wanted = list(dict.fromkeys(ids))
        by_id = {f.id: f for f in pool}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise FailedJobNotFound(f"no failed job with id {', '.join(missing)}")
        return [by_id[i] for i in wanted]
