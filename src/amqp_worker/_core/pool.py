"""A bounded pool of job tasks that can be drained gracefully.

Every job a worker takes becomes one task here. A task first *waits* for one of
``max_concurrency`` slots, then *runs*. Stopping treats the two differently:
waiting tasks have not started, so they are abandoned at once (the caller
decides what that means: a dropped in-process job, or a message handed back to
the broker); running tasks get ``timeout_s`` to finish before they are
cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .handler_threads import HandlerThreads

__all__ = ["DrainReport", "TaskPool"]

logger = logging.getLogger("amqp_worker")


@dataclass(frozen=True, slots=True)
class DrainReport:
    """What :meth:`TaskPool.drain` did."""

    abandoned: int
    """Tasks that were still waiting for a slot and never started."""
    finished: int
    """Running tasks that ended on their own within the timeout."""
    cancelled: int
    """Running tasks cancelled because the timeout passed."""


class TaskPool:
    """Runs job tasks, at most ``max_concurrency`` at once.

    Sync handlers run on :attr:`threads`, a thread pool of the same size, so a
    blocking handler never stalls the event loop and the thread count is
    bounded by the same limit as the tasks.
    """

    def __init__(self, max_concurrency: int) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError("max_concurrency must be an int")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None
        self._waiting: dict[asyncio.Task[None], Callable[[], None] | None] = {}
        self._running: set[asyncio.Task[None]] = set()
        self.threads: HandlerThreads | None = None

    @property
    def running(self) -> int:
        """How many tasks hold a slot right now."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """How many tasks wait for a slot right now."""
        return len(self._waiting)

    def open(self) -> None:
        """Prepare slots and threads; call from inside the event loop."""
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self.threads = HandlerThreads(self.max_concurrency, name="amqp-worker")

    def submit(
        self,
        run: Callable[[], Awaitable[None]],
        *,
        on_abandon: Callable[[], None] | None = None,
    ) -> asyncio.Task[None]:
        """Queue ``run`` for a slot. ``on_abandon`` is called if it is dropped before starting."""
        if self._slots is None:
            raise RuntimeError("TaskPool.submit() before open()")
        task = asyncio.get_running_loop().create_task(self._body(self._slots, run))
        self._waiting[task] = on_abandon
        task.add_done_callback(self._forget)
        return task

    async def _body(self, slots: asyncio.Semaphore, run: Callable[[], Awaitable[None]]) -> None:
        async with slots:
            task = asyncio.current_task()
            assert task is not None
            self._waiting.pop(task, None)
            self._running.add(task)
            await run()

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        on_abandon = self._waiting.pop(task, None)
        if on_abandon is not None:
            on_abandon()
        if not task.cancelled() and task.exception() is not None:
            # run() is expected to handle its own errors; anything left is a bug.
            logger.error("job task crashed", exc_info=task.exception())

    async def idle(self) -> None:
        """Return once no task waits or runs, including tasks submitted meanwhile."""
        while self._waiting or self._running:
            await asyncio.wait({*self._waiting, *self._running})

    async def drain(self, timeout_s: float | None) -> DrainReport:
        """Abandon waiting tasks, give running ones ``timeout_s`` (None: forever), cancel the rest.

        Logs a WARNING with the number cancelled. Holds no lock while it waits, so a running handler may still enqueue.
        """
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        running = set(self._running)
        cancelled = 0
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout_s)
            for task in pending:
                task.cancel()
            cancelled = len(pending)
        if waiting or running:
            await asyncio.gather(*waiting, *running, return_exceptions=True)
        if self.threads is not None:
            # Threads of cancelled sync handlers cannot be interrupted; they end on their own.
            self.threads.shutdown()
            self.threads = None
        self._slots = None
        if cancelled:
            logger.warning(
                "stop: cancelled %d handler(s) still running after %ss "
                "(sync handler threads run on until they return)",
                cancelled,
                timeout_s,
            )
        return DrainReport(
            abandoned=len(waiting), finished=len(running) - cancelled, cancelled=cancelled
        )
