"""What every worker shares: registration, argument checks, running one job.

Implementations add a transport: where enqueued jobs wait, and how they come
back to :meth:`BaseWorker._execute`.
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, TypeVar

from .errors import HandlerAlreadyRegistered, HandlerNotRegistered
from .handlers import Handler, HandlerSpec
from .job import Job
from .pool import DrainReport, TaskPool
from .protocol import DEFAULT_STOP_TIMEOUT_S

__all__ = ["BaseWorker", "delay_until", "seconds"]

logger = logging.getLogger("amqp_worker")

H = TypeVar("H", bound=Handler)


def seconds(delay: timedelta | float) -> float:
    """Convert a ``perform_in`` delay to seconds; raise on negative or non-finite input."""
    if isinstance(delay, timedelta):
        value = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        value = float(delay)
    else:
        raise TypeError(f"delay must be a timedelta or a number of seconds, got {delay!r}")
    if not math.isfinite(value):
        raise ValueError(f"delay must be finite, got {delay!r}")
    if value < 0:
        raise ValueError(f"delay must not be negative, got {delay!r}")
    return value


def delay_until(when: datetime, now: datetime | None = None) -> float:
    """Seconds from ``now`` until ``when`` (0 if past); a naive ``when`` raises ``ValueError``."""
    if not isinstance(when, datetime):
        raise TypeError(f"when must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            "when must be timezone-aware; a naive datetime is ambiguous "
            "(use datetime.now(UTC) + timedelta(...))"
        )
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class BaseWorker(abc.ABC):
    """Shared machinery of :class:`SimpleWorker` and :class:`AMQPWorker`."""

    def __init__(self, *, max_concurrency: int = 25) -> None:
        self._pool = TaskPool(max_concurrency)
        self._handlers: dict[str, HandlerSpec] = {}

    @property
    def max_concurrency(self) -> int:
        """The most handlers that run at once."""
        return self._pool.max_concurrency

    @property
    def handlers(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        return tuple(sorted(self._handlers))

    # -- registration ---------------------------------------------------------

    def register(self, name: str, handler: Handler) -> None:
        spec = HandlerSpec.inspect(name, handler)
        if name in self._handlers:
            raise HandlerAlreadyRegistered(name)
        self._handlers[name] = spec

    def handler(self, name: str) -> Callable[[H], H]:
        def decorate(func: H) -> H:
            self.register(name, func)
            return func

        return decorate

    # -- enqueueing -----------------------------------------------------------

    async def perform(self, job: Job) -> str:
        return await self._enqueue(self._outgoing(job), 0.0)

    async def perform_at(self, job: Job, when: datetime) -> str:
        job = self._outgoing(job)
        return await self._enqueue(job, delay_until(when, job.enqueued_at))

    async def perform_in(self, job: Job, delay: timedelta | float) -> str:
        delay_s = seconds(delay)
        return await self._enqueue(self._outgoing(job), delay_s)

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue several jobs to run as soon as possible; return their ids in order."""
        return [await self.perform(job) for job in jobs]

    def _outgoing(self, job: Job) -> Job:
        """The copy that is enqueued: stamped with the enqueue time; ``job`` itself is untouched."""
        if not isinstance(job, Job):
            raise TypeError(f"expected a Job, got {type(job).__name__}")
        return job.model_copy(update={"enqueued_at": datetime.now(UTC)})

    @abc.abstractmethod
    async def _enqueue(self, job: Job, delay_s: float) -> str:
        """Place ``job`` so it runs after ``delay_s`` seconds; return its id."""

    # -- lifecycle ------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _drain(self, timeout_s: float | None) -> DrainReport:
        """Wait for running handlers, cancel the late ones, and log what happened."""
        report = await self._pool.drain(timeout_s)
        if report.cancelled:
            logger.warning(
                "stop: cancelled %d handler(s) still running after %ss "
                "(sync handler threads run on until they return)",
                report.cancelled,
                timeout_s,
            )
        return report

    # -- running one job ------------------------------------------------------

    def _spec(self, job: Job) -> HandlerSpec:
        try:
            return self._handlers[job.handler]
        except KeyError:
            raise HandlerNotRegistered(job.handler) from None

    async def _invoke(self, job: Job) -> None:
        """Validate the args and run the handler; exceptions propagate to the caller."""
        spec = self._spec(job)
        args = spec.parse_args(job)
        await spec.call(job, args, self._pool.threads)

    def _log_failure(self, job: Job, exc: BaseException, what: str = "failed") -> None:
        """Log a job's failure once, with its identity and traceback."""
        logger.error(
            "job %s %s: handler=%s queue=%s attempt=%d: %s: %s",
            job.id,
            what,
            job.handler,
            job.queue,
            job.attempt,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={
                "job_id": job.id,
                "handler": job.handler,
                "queue": job.queue,
                "attempt": job.attempt,
            },
        )
