"""What every worker shares: registration, enqueue checks, the lifecycle, running one job.

:class:`BaseWorker` implements the :class:`~amqp_worker.Worker` protocol once,
and inherits its docstrings: the semantics are written there, not again here.
A worker adds a *transport*: where enqueued jobs wait (:meth:`~BaseWorker._enqueue`),
how it begins and ends taking them (:meth:`~BaseWorker._begin`,
:meth:`~BaseWorker._end`), and how one delivery is settled. Running a job is
one template method, :meth:`~amqp_worker._core.running.JobRunner._run`: attempt, decide, then retry
later or park; a worker overrides only the transport steps
(:meth:`~BaseWorker._succeeded`, :meth:`~BaseWorker._retry_later`,
:meth:`~BaseWorker._park`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self

from pydantic import BaseModel

from amqp_worker.errors import ConfigurationError, InvalidControl

from .cancels import CancelBook
from .defaults import (
    DEFAULT_CANCEL_TTL_S,
    DEFAULT_LOOP_STALL_WARN_S,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_QUEUE,
    DEFAULT_STOP_TIMEOUT_S,
)
from .delays import delay_until, seconds
from .handlers import Handler, HandlerSpec, check_timeout
from .hooks import Hooks
from .interfaces import FailedJobs, Worker
from .job import Job, stamped
from .limits import Limits
from .pool import DrainReport, TaskPool
from .registry import Registry
from .results import JobHandle
from .retry import RetryPolicy
from .running import D, JobRunner
from .schedule import MissedPolicy, Schedule
from .typed import HandlerDecorator
from .unique import UniqueJobs
from .watchdog import LoopWatchdog, OnLoop, check_stall_threshold

__all__ = ["BaseWorker"]

logger = logging.getLogger("amqp_worker")

#: How many times start() tries when a transient broker error ends a try (see start()).
START_ATTEMPTS = 3
#: Pause between two tries of start().
START_RETRY_S = 1.0


class BaseWorker(UniqueJobs, JobRunner[D], Worker, Generic[D]):
    """Shared machinery of :class:`SimpleWorker` and :class:`AMQPWorker`.

    ``D`` is the transport's delivery: what :meth:`_run` settles when an
    attempt ends. While the worker runs, a :class:`~amqp_worker._core.watchdog.LoopWatchdog`
    thread logs a WARNING when the event loop is blocked for ``loop_stall_warn_s``
    (0: no watchdog), naming the async handler on it.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        loop_stall_warn_s: float = DEFAULT_LOOP_STALL_WARN_S,
        default_queue: str = DEFAULT_QUEUE,
        cancel_ttl_s: float = DEFAULT_CANCEL_TTL_S,
    ) -> None:
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self._pool = TaskPool(max_concurrency)
        self._registry = Registry()
        self.retry = retry or RetryPolicy()
        self.timeout_s = check_timeout(timeout_s)
        self.hooks = Hooks()
        self._running = False
        self._starting = asyncio.Lock()
        self._loop_stall_warn_s = check_stall_threshold(loop_stall_warn_s)
        # The async handlers in progress, for the watchdog's warning; see watchdog.py.
        self._on_loop: OnLoop = {}
        self._watchdog: LoopWatchdog | None = None
        self._default_queue = default_queue
        self._cancels = CancelBook(cancel_ttl_s)

    @property
    def max_concurrency(self) -> int:
        return self._pool.max_concurrency

    @property
    def handlers(self) -> tuple[str, ...]:
        return tuple(sorted(self._registry.handlers))

    @property
    def limits(self) -> dict[str, Limits]:
        """The rate and concurrency limits of each limited handler, by name; a copy."""
        return {n: s.limits for n, s in sorted(self._registry.handlers.items()) if s.limits}

    @property
    def handler_specs(self) -> dict[str, HandlerSpec]:
        """What :meth:`register` learned about each handler (args model, ...), by name; a copy."""
        return dict(self._registry.handlers)

    @property
    def running(self) -> bool:
        return self._running

    def with_options(self, **overrides: Any) -> Self:
        try:
            fresh = self._copy(overrides)
        except ConfigurationError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"with_options: {exc}") from None
        fresh._registry.fill_from(self._registry)
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
        result: bool = False,
        max_age_s: float | None = None,
        rate: str | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        limit_key: str | Callable[[Job], str | None] | None = None,
    ) -> None:
        limits = (rate, burst, concurrency, limit_key)
        self._registry.register(
            name, handler, retry, timeout_s, result, max_age_s, limits, self.running
        )

    def handler(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        queue: str | None = None,
        result: bool = False,
        max_age_s: float | None = None,
        rate: str | None = None,
        burst: int | None = None,
        concurrency: int | None = None,
        limit_key: str | Callable[[Job], str | None] | None = None,
    ) -> HandlerDecorator:
        def register(func: Callable[..., Any]) -> type[BaseModel] | None:
            limits = (rate, burst, concurrency, limit_key)
            spec = self._registry.register(
                name, func, retry, timeout_s, result, max_age_s, limits, self.running
            )
            return spec.args_model

        return HandlerDecorator(self, name, queue or self.default_queue, register)

    @property
    def default_queue(self) -> str:
        return self._default_queue

    # -- periodic jobs ----------------------------------------------------------

    def schedule(
        self,
        name: str,
        job: Job,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        missed: MissedPolicy = "once",
    ) -> Schedule:
        return self._registry.schedule(
            name, job, cron=cron, every=every, tz=tz, missed=missed, running=self._running
        )

    @property
    def schedules(self) -> dict[str, Schedule]:
        return dict(self._registry.schedules)

    # -- enqueueing -----------------------------------------------------------

    async def perform(self, job: Job) -> JobHandle:
        return await self._perform(self._outgoing(job), 0.0)

    async def perform_at(self, job: Job, when: datetime) -> JobHandle:
        job = self._outgoing(job)
        return await self._perform(job, delay_until(when, job.enqueued_at))

    async def perform_in(self, job: Job, delay: timedelta | float) -> JobHandle:
        delay_s = seconds(delay)
        return await self._perform(self._outgoing(job), delay_s)

    async def _perform(self, job: Job, delay_s: float) -> JobHandle:
        if delay_s > 0 and job.partition_key is not None:
            raise InvalidControl(
                f"job {job.id} has a partition_key and cannot be delayed: it would run "
                "out of its partition's order"
            )
        await self._enqueue_unique(job, delay_s, self.hooks.publishing(job))
        return JobHandle(job.id, self._result_source(), job.enqueued_at)

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        return [await self.perform(job) for job in jobs]

    def _outgoing(self, job: Job) -> Job:
        """The copy that is enqueued: stamped with the enqueue time; ``job`` itself is untouched."""
        if not isinstance(job, Job):
            raise TypeError(f"expected a Job, got {type(job).__name__}")
        return stamped(job, self._now())

    def _now(self) -> datetime:
        """The current time as this worker sees it (a test worker may run on its own clock)."""
        return datetime.now(UTC)

    @property
    @abc.abstractmethod
    def failed(self) -> FailedJobs: ...

    @abc.abstractmethod
    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        """Place ``job`` (with ``headers``) so it runs after ``delay_s`` seconds; return its id."""

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        # Two concurrent start() calls must not both begin (two consumers per queue).
        async with self._starting:
            for attempt in range(1, START_ATTEMPTS + 1):
                if self._running:
                    return
                # Connecting has its own retries and errors: a failure there is final.
                await self._prepare()
                try:
                    await self._start_once()
                    return
                except Exception as exc:
                    if attempt == START_ATTEMPTS or not self._transient_start_error(exc):
                        raise
                    # Fix: RabbitMQ 3.10 ends the connection (541) of a consumer whose new
                    # quorum queue another worker is still creating; once made, it works.
                    logger.warning("start failed (%s: %s); starting again", type(exc).__name__, exc)
                    await asyncio.sleep(START_RETRY_S)

    @staticmethod
    def _transient_start_error(exc: BaseException) -> bool:
        """True if a start that failed with ``exc`` may work if tried again (the transport's say)."""
        return False

    async def _start_once(self) -> None:
        self._pool.open()
        self._running = True
        if self._loop_stall_warn_s > 0:
            self._watchdog = LoopWatchdog(self._loop_stall_warn_s, self._on_loop)
            self._watchdog.start()
        try:
            await self._begin()
        except BaseException:
            await self.stop(timeout_s=0)
            raise

    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        was_running, self._running = self._running, False
        try:
            await self._end(was_running, timeout_s)
        finally:
            # After _end: handlers still draining can block the loop too.
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None:
                watchdog.stop()

    async def _prepare(self) -> None:
        """Anything :meth:`start` needs before the worker counts as running (a connection)."""

    @abc.abstractmethod
    async def _begin(self) -> None:
        """Start delivering jobs to :meth:`_submit`; the worker is already running."""

    @abc.abstractmethod
    async def _end(self, was_running: bool, timeout_s: float | None) -> None:
        """Stop delivering, :meth:`_drain` running handlers, release the transport.

        ``was_running`` is False for a worker that was stopped already or
        never started (a publish-only worker still closes its connection).
        """

    def _has_room(self) -> bool:
        """True if a job submitted now would start at once: a handler slot is free."""
        return self._pool.running + self._pool.waiting < self._pool.max_concurrency

    def _submit_run(self, run: Callable[[], Any], on_abandon: Callable[[], None]) -> None:
        """Queue ``run()`` for a handler slot; ``on_abandon()`` if stop() drops it unstarted."""
        self._pool.submit(run, on_abandon=on_abandon)

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
        return await self._pool.drain(timeout_s)
