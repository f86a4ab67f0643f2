"""What every worker shares: registration, argument checks, running one job.

Implementations add a transport: where enqueued jobs wait, and how they come
back to :meth:`BaseWorker._execute`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from .defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_STOP_TIMEOUT_S
from .errors import (
    ConfigurationError,
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidArgs,
)
from .failures import FailedJob, FailureReason
from .handlers import Handler, HandlerSpec, check_timeout
from .hooks import Hooks, JobEvent
from .job import Job
from .pool import DrainReport, TaskPool
from .retry import Decision, RetryPolicy, decide

__all__ = ["BaseWorker", "Outcome", "delay_until", "seconds"]

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

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._pool = TaskPool(max_concurrency)
        self._handlers: dict[str, HandlerSpec] = {}
        self.retry = retry or RetryPolicy()
        """The retry policy of handlers registered without one."""
        self.timeout_s = check_timeout(timeout_s)
        """The timeout of handlers registered without one; None means no limit."""
        self.hooks = Hooks()
        """Callbacks around every job: see :mod:`amqp_worker.hooks`."""
        self._running = False

    @property
    def max_concurrency(self) -> int:
        """The most handlers that run at once."""
        return self._pool.max_concurrency

    @property
    def handlers(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        return tuple(sorted(self._handlers))

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`: the worker is taking jobs."""
        return self._running

    def with_options(self, **overrides: Any) -> Self:
        """A new, stopped worker like this one, with ``overrides`` applied.

        Settings are immutable, so this is how a daemon or a test changes them.
        The copy has this worker's handlers and hooks (as registered so far),
        default retry policy and timeout; registering a handler or a hook on
        one afterwards does not affect the other. ``overrides`` are the
        constructor's keyword options (for an AMQPWorker also ``url``; its
        connection and TLS context are kept). Raises
        :class:`~amqp_worker.errors.ConfigurationError` for unknown or invalid
        ones.
        """
        try:
            fresh = self._copy(overrides)
        except ConfigurationError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"with_options: {exc}") from None
        fresh._handlers = dict(self._handlers)
        fresh.hooks = self.hooks.copy()
        return fresh

    @abc.abstractmethod
    def _copy(self, overrides: dict[str, Any]) -> Self:
        """A new worker built from this one's constructor arguments and ``overrides``."""

    # -- registration ---------------------------------------------------------

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
    ) -> None:
        spec = HandlerSpec.inspect(name, handler, retry=retry, timeout_s=timeout_s)
        if name in self._handlers:
            raise HandlerAlreadyRegistered(name)
        self._handlers[name] = spec

    def handler(
        self, name: str, *, retry: RetryPolicy | None = None, timeout_s: float | None = None
    ) -> Callable[[H], H]:
        def decorate(func: H) -> H:
            self.register(name, func, retry=retry, timeout_s=timeout_s)
            return func

        return decorate

    # -- enqueueing -----------------------------------------------------------

    async def perform(self, job: Job) -> str:
        job = self._outgoing(job)
        return await self._enqueue(job, 0.0, self.hooks.publishing(job))

    async def perform_at(self, job: Job, when: datetime) -> str:
        job = self._outgoing(job)
        delay_s = delay_until(when, job.enqueued_at)
        return await self._enqueue(job, delay_s, self.hooks.publishing(job))

    async def perform_in(self, job: Job, delay: timedelta | float) -> str:
        delay_s = seconds(delay)
        job = self._outgoing(job)
        return await self._enqueue(job, delay_s, self.hooks.publishing(job))

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue several jobs to run as soon as possible; return their ids in order."""
        return [await self.perform(job) for job in jobs]

    def _outgoing(self, job: Job) -> Job:
        """The copy that is enqueued: stamped with the enqueue time; ``job`` itself is untouched."""
        if not isinstance(job, Job):
            raise TypeError(f"expected a Job, got {type(job).__name__}")
        return job.model_copy(update={"enqueued_at": datetime.now(UTC)})

    @abc.abstractmethod
    async def failed_jobs(
        self, queue: str | None = None, limit: int | None = None
    ) -> list[FailedJob]:
        """Parked jobs, oldest first (of ``queue`` only, if given), without removing any."""

    @abc.abstractmethod
    async def retry_failed(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> list[str]:
        """Enqueue parked jobs again with ``attempt`` reset (None: all); return their ids.

        Raises :class:`~amqp_worker.errors.FailedJobNotFound` for unknown ids.
        """

    @abc.abstractmethod
    async def purge_failed(self, ids: Iterable[str] | None = None, queue: str | None = None) -> int:
        """Delete parked jobs (None: all); return how many."""

    @abc.abstractmethod
    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        """Place ``job`` (with ``headers``) so it runs after ``delay_s`` seconds; return its id."""

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

    def _timeout_for(self, spec: HandlerSpec) -> float | None:
        timeout = spec.timeout_s if spec.timeout_s is not None else self.timeout_s
        return None if timeout is None or math.isinf(timeout) else timeout

    async def _attempt(self, job: Job, queue: str, headers: Mapping[str, Any]) -> Outcome:
        """Run one attempt of ``job``: validate, call the handler, report what happened."""
        try:
            spec = self._spec(job)
            args = spec.parse_args(job)
        except (HandlerNotRegistered, InvalidArgs) as exc:
            return Outcome(exc, 0.0)
        if self.hooks:
            await self.hooks.emit(
                JobEvent("before", queue, job, job.id, job.attempt, headers=headers)
            )
        timeout_s = self._timeout_for(spec)
        started = time.perf_counter()
        try:
            linger = await spec.run(job, args, self._pool.threads, timeout_s)
        except asyncio.CancelledError as cancelled:
            # stop() gave up on it: hooks that opened something in `before` (a span,
            # an in-progress count) must hear that it ended. The job itself is not
            # settled here; the worker hands it back.
            with contextlib.suppress(BaseException):
                await self._tell_failure(
                    job, queue, time.perf_counter() - started, cancelled, headers
                )
            raise
        except Exception as exc:
            return Outcome(exc, time.perf_counter() - started)
        duration = time.perf_counter() - started
        if linger is not None:
            return Outcome(spec.timeout_error(timeout_s), duration, linger)
        logger.info(
            "job %s succeeded: handler=%s queue=%s attempt=%d duration=%.3fs",
            job.id,
            job.handler,
            queue,
            job.attempt,
            duration,
            extra={
                "job_id": job.id,
                "handler": job.handler,
                "queue": queue,
                "attempt": job.attempt,
                "duration_s": round(duration, 6),
                "outcome": "succeeded",
            },
        )
        if self.hooks:
            await self.hooks.emit(
                JobEvent("after", queue, job, job.id, job.attempt, duration, headers=headers)
            )
        return Outcome(None, duration)

    def _decide(self, job: Job, exc: BaseException) -> Decision:
        spec = self._handlers.get(job.handler)
        policy = spec.retry if spec is not None and spec.retry is not None else self.retry
        return decide(policy, job.attempt, exc)

    async def _failed_attempt(
        self,
        job: Job,
        queue: str,
        outcome: Outcome,
        decision: Decision,
        headers: Mapping[str, Any],
    ) -> None:
        """Log a failed attempt once, with its identity and traceback, and tell the hooks."""
        exc = outcome.error
        assert exc is not None
        then = f"retrying in {decision.delay_s:.3g}s" if decision.retry else "parking it"
        logger.error(
            "job %s failed: handler=%s queue=%s attempt=%d duration=%.3fs: %s: %s; %s",
            job.id,
            job.handler,
            queue,
            job.attempt,
            outcome.duration_s,
            type(exc).__name__,
            exc,
            then,
            exc_info=exc,
            extra={
                "job_id": job.id,
                "handler": job.handler,
                "queue": queue,
                "attempt": job.attempt,
                "duration_s": round(outcome.duration_s, 6),
                "outcome": "retried" if decision.retry else "parked",
            },
        )
        await self._tell_failure(
            job,
            queue,
            outcome.duration_s,
            exc,
            headers,
            retry_in_s=decision.delay_s if decision.retry else None,
        )

    async def _tell_failure(
        self,
        job: Job,
        queue: str,
        duration_s: float,
        error: BaseException,
        headers: Mapping[str, Any],
        retry_in_s: float | None = None,
    ) -> None:
        """Tell the ``on_failure`` hooks that an attempt of ``job`` ended without success."""
        if self.hooks:
            await self.hooks.emit(
                JobEvent(
                    "on_failure",
                    queue,
                    job,
                    job.id,
                    job.attempt,
                    duration_s,
                    error,
                    retry_in_s=retry_in_s,
                    headers=headers,
                )
            )

    async def _parked(
        self,
        queue: str,
        job: Job | None,
        job_id: str,
        reason: FailureReason,
        exc: BaseException,
        headers: Mapping[str, Any],
    ) -> None:
        """Tell the hooks a job was parked."""
        if self.hooks:
            attempt = job.attempt if job else 0
            await self.hooks.emit(
                JobEvent(
                    "on_parked",
                    queue,
                    job,
                    job_id,
                    attempt,
                    error=exc,
                    reason=reason,
                    headers=headers,
                )
            )

    @staticmethod
    async def _linger(outcome: Outcome) -> None:
        """Hold the slot until a timed-out sync handler's thread has returned."""
        if outcome.linger is not None:
            with contextlib.suppress(Exception):
                await outcome.linger


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went."""

    error: BaseException | None
    duration_s: float
    linger: asyncio.Future[Any] | None = None
    """A timed-out sync handler's thread, still running."""
