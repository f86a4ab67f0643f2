"""``SimpleWorker``: the in-process worker, for development and tests.

It needs no broker and follows the same contract as
:class:`~amqp_worker.AMQPWorker`, but **it persists nothing**: jobs live in
this process's memory, and whatever is still queued or delayed when
:meth:`SimpleWorker.stop` returns (or the process dies) is gone. Unlike
Buffalo's ``worker.Simple``, it says so: ``stop()`` logs a WARNING with the
number of jobs it dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

from .base import BaseWorker
from .job import Job
from .protocol import DEFAULT_STOP_TIMEOUT_S

__all__ = ["SimpleWorker"]

logger = logging.getLogger("amqp_worker")


class SimpleWorker(BaseWorker):
    """Runs jobs in this process with asyncio; persists nothing.

    - Jobs performed before :meth:`start` wait in memory and run after it.
    - Delays use event-loop timers, not polling.
    - :meth:`perform` of an unregistered handler raises
      :class:`~amqp_worker.errors.HandlerNotRegistered`: this is the only
      worker that knows every handler at publish time.
    """

    def __init__(self, *, max_concurrency: int = 25) -> None:
        super().__init__(max_concurrency=max_concurrency)
        self._running = False
        self._pending: deque[Job] = deque()
        self._timers: dict[int, tuple[asyncio.TimerHandle, Job]] = {}
        self._tokens = itertools.count()
        self._dropped = 0

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<SimpleWorker {state} max_concurrency={self.max_concurrency}>"

    async def _enqueue(self, job: Job, delay_s: float) -> str:
        self._spec(job)  # fail fast: an unknown handler could never run here
        if delay_s > 0:
            token = next(self._tokens)
            timer = asyncio.get_running_loop().call_later(delay_s, self._due, token)
            self._timers[token] = (timer, job)
        else:
            self._accept(job)
        return job.id

    def _due(self, token: int) -> None:
        _, job = self._timers.pop(token)
        self._accept(job)

    def _accept(self, job: Job) -> None:
        if self._running:
            self._submit(job)
        else:
            self._pending.append(job)

    def _submit(self, job: Job) -> None:
        def dropped() -> None:
            self._dropped += 1

        self._pool.submit(lambda: self._execute(job), on_abandon=dropped)

    async def _execute(self, job: Job) -> None:
        try:
            await self._invoke(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log_failure(job, exc)

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
