"""The :class:`Worker` protocol: Buffalo's background-job interface, in Python.

=====================  ===========================================
Buffalo (Go)           amqp-worker
=====================  ===========================================
``Start(ctx)``         ``await worker.start()``
``Stop()``             ``await worker.stop(timeout_s=...)``
``Perform(job)``       ``await worker.perform(job)``
``PerformAt(job, t)``  ``await worker.perform_at(job, when)``
``PerformIn(job, d)``  ``await worker.perform_in(job, delay)``
``Register(name, h)``  ``worker.register(name, h)`` / ``@worker.handler(name)``
=====================  ===========================================

Every implementation (:class:`~amqp_worker.SimpleWorker`,
:class:`~amqp_worker.AMQPWorker`) follows the semantics written here, and one
contract test suite checks them all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, TypeVar, runtime_checkable

from .defaults import DEFAULT_STOP_TIMEOUT_S
from .handlers import Handler
from .job import Job
from .retry import RetryPolicy

__all__ = ["Worker"]

H = TypeVar("H", bound=Handler)


@runtime_checkable
class Worker(Protocol):
    """Runs registered handlers for enqueued jobs.

    Semantics shared by every implementation:

    - ``perform*`` only enqueue: they never run the handler inline, and the
      caller never sees a handler's exception.
    - A failed attempt is logged once (job id, handler, queue, attempt and
      traceback) and the worker keeps running. It is retried with backoff per
      the handler's :class:`~amqp_worker.RetryPolicy`, then parked with its
      history; invalid args, unknown handlers and
      :class:`~amqp_worker.PermanentError` are parked at once.
    - At most ``max_concurrency`` handlers run at once (default 25); sync
      handlers run in worker threads, never on the event loop.
    - ``async with worker:`` calls :meth:`start` and, on exit, :meth:`stop`.
    """

    async def start(self) -> None:
        """Begin running jobs. Jobs enqueued earlier wait and run now.

        Calling it on a running worker does nothing; after :meth:`stop` it
        starts the worker again.
        """
        ...

    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop taking jobs and wait for running handlers, at most ``timeout_s`` seconds.

        Handlers still running after ``timeout_s`` (``None`` waits forever) are
        cancelled, and the log says how many. Idempotent: stopping a stopped
        worker does nothing. No lock is held while waiting, so a handler may
        still enqueue jobs during ``stop`` without deadlock.
        """
        ...

    async def perform(self, job: Job) -> str:
        """Enqueue ``job`` to run as soon as possible; return its id.

        ``job`` is not mutated.
        """
        ...

    async def perform_at(self, job: Job, when: datetime) -> str:
        """Enqueue ``job`` to run at ``when``, a timezone-aware datetime; return its id.

        A time in the past runs as soon as possible. A naive datetime is
        ambiguous and raises ``ValueError``. ``job`` is not mutated.
        """
        ...

    async def perform_in(self, job: Job, delay: timedelta | float) -> str:
        """Enqueue ``job`` to run ``delay`` after now (seconds if a number); return its id.

        The delay counts from this call. A negative or non-finite delay raises
        ``ValueError``. ``job`` is not mutated.
        """
        ...

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Register ``handler`` for jobs whose ``handler`` field is ``name``.

        ``retry`` and ``timeout_s`` override the worker's defaults for this
        handler (``math.inf``: no timeout). Raises
        :class:`~amqp_worker.errors.InvalidHandler` for an empty or illegal
        name, a non-callable or bad options, and
        :class:`~amqp_worker.errors.HandlerAlreadyRegistered` for a name
        already taken. Allowed before or after :meth:`start`.
        """
        ...

    def handler(
        self, name: str, *, retry: RetryPolicy | None = None, timeout_s: float | None = None
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register`; returns the function unchanged."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
