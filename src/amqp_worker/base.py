"""What every worker shares: registration, enqueue checks, the lifecycle, running one job.

:class:`BaseWorker` implements the :class:`~amqp_worker.Worker` protocol once.
A worker adds a *transport*: where enqueued jobs wait (:meth:`~BaseWorker._enqueue`),
how it begins and ends taking them (:meth:`~BaseWorker._begin`,
:meth:`~BaseWorker._end`), and how one delivery is settled. Running a job is
one template method, :meth:`BaseWorker._run`: attempt, decide, then retry
later or park; a worker overrides only the transport steps
(:meth:`~BaseWorker._succeeded`, :meth:`~BaseWorker._retry_later`,
:meth:`~BaseWorker._park`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel

from .attempt import report_failure, run_attempt
from .defaults import DEFAULT_MAX_CONCURRENCY, DEFAULT_STOP_TIMEOUT_S
from .errors import (
    ConfigurationError,
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidSchedule,
)
from .failures import AttemptRecord, FailureReason
from .handlers import Handler, HandlerSpec, check_timeout
from .hooks import Hooks
from .job import Job
from .pool import DrainReport, TaskPool
from .protocol import FailedJobs
from .retry import RetryPolicy, decide
from .schedule import MissedPolicy, Schedule
from .typed import DEFAULT_QUEUE, HandlerDecorator, unwrap
from .watchdog import DEFAULT_LOOP_STALL_WARN_S, LoopWatchdog, OnLoop, check_stall_threshold

__all__ = ["BaseWorker", "delay_until", "seconds"]

logger = logging.getLogger("amqp_worker")

#: What a worker's transport hands to :meth:`BaseWorker._run`: a message, an entry in memory.
D = TypeVar("D")


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


class BaseWorker(abc.ABC, Generic[D]):
    """Shared machinery of :class:`SimpleWorker` and :class:`AMQPWorker`.

    ``D`` is the transport's delivery: what :meth:`_run` settles when an
    attempt ends. While the worker runs, a :class:`~amqp_worker.watchdog.LoopWatchdog`
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
        self._starting = asyncio.Lock()
        self._loop_stall_warn_s = check_stall_threshold(loop_stall_warn_s)
        # The async handlers in progress, for the watchdog's warning; see watchdog.py.
        self._on_loop: OnLoop = {}
        self._watchdog: LoopWatchdog | None = None
        self._schedules: dict[str, Schedule] = {}
        self._default_queue = default_queue

    @property
    def max_concurrency(self) -> int:
        """The most handlers that run at once."""
        return self._pool.max_concurrency

    @property
    def handlers(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        return tuple(sorted(self._handlers))

    @property
    def handler_specs(self) -> dict[str, HandlerSpec]:
        """What :meth:`register` learned about each handler (args model, ...), by name; a copy."""
        return dict(self._handlers)

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
        fresh._schedules = dict(self._schedules)
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
        """Register ``handler`` for jobs whose ``handler`` field is ``name``.

        ``retry`` and ``timeout_s`` override the worker's defaults for this
        handler (``math.inf``: no timeout). Raises
        :class:`~amqp_worker.errors.InvalidHandler` for an empty or illegal
        name, a non-callable or bad options, and
        :class:`~amqp_worker.errors.HandlerAlreadyRegistered` for a name
        already taken. Allowed before or after :meth:`start`.
        """
        spec = HandlerSpec.inspect(name, unwrap(handler), retry=retry, timeout_s=timeout_s)
        if name in self._handlers:
            raise HandlerAlreadyRegistered(name)
        self._handlers[name] = spec

    def handler(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        queue: str | None = None,
    ) -> HandlerDecorator:
        """Decorator form of :meth:`register`.

        A function whose first parameter is a pydantic model comes back as a
        :class:`~amqp_worker.TypedHandler`: callable as before, plus
        ``perform(args)``/``perform_in``/``perform_at`` on this worker, typed by
        that model, onto ``queue`` (default: :attr:`default_queue`). Any other
        function comes back unchanged.
        """

        def register(func: Callable[..., Any]) -> type[BaseModel] | None:
            self.register(name, func, retry=retry, timeout_s=timeout_s)
            return self._handlers[name].args_model

        return HandlerDecorator(self, name, queue or self.default_queue, register)

    @property
    def default_queue(self) -> str:
        """Where a typed handler's ``perform`` goes unless told: an AMQPWorker's first queue."""
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
        """Enqueue ``job`` on every tick of ``cron`` (in ``tz``) or ``every`` interval.

        ``cron`` has five fields (``0 2 * * *``, names such as ``mon-fri``);
        ``every`` is a ``timedelta`` or seconds, at least 1 s, its ticks aligned
        to the Unix epoch. ``tz`` is an IANA zone name. ``missed`` says what to
        do with ticks that fell due while no worker ran: ``skip`` them, enqueue
        the latest ``once``, or ``all`` of them. Each tick's job is a copy of
        ``job`` with the id ``<name>@<tick in UTC>`` and ``scheduled_at`` set to
        the tick, so a duplicate has the same id.

        On RabbitMQ every replica declares the same schedules and each tick is
        enqueued once across them (see ``docs/periodic.md``). Declare schedules
        before :meth:`start`. Raises
        :class:`~amqp_worker.errors.InvalidSchedule` for a bad definition, a
        name already taken, or a worker already running.
        """
        spec = Schedule.build(name, job, cron=cron, every=every, tz=tz, missed=missed)
        if name in self._schedules:
            raise InvalidSchedule(f"a schedule named {name!r} is already defined")
        if self._running:
            raise InvalidSchedule(f"schedule {name!r}: declare schedules before start()")
        self._schedules[name] = spec
        return spec

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The schedules declared on this worker, by name (a copy)."""
        return dict(self._schedules)

    # -- enqueueing -----------------------------------------------------------

    async def perform(self, job: Job) -> str:
        """Enqueue ``job`` to run as soon as possible; return its id. ``job`` is not mutated."""
        job = self._outgoing(job)
        return await self._enqueue(job, 0.0, self.hooks.publishing(job))

    async def perform_at(self, job: Job, when: datetime) -> str:
        """Enqueue ``job`` to run at ``when``, a timezone-aware datetime; return its id.

        A time in the past runs as soon as possible; a naive datetime raises
        ``ValueError``.
        """
        job = self._outgoing(job)
        delay_s = delay_until(when, job.enqueued_at)
        return await self._enqueue(job, delay_s, self.hooks.publishing(job))

    async def perform_in(self, job: Job, delay: timedelta | float) -> str:
        """Enqueue ``job`` to run ``delay`` after now (seconds if a number); return its id.

        A negative or non-finite delay raises ``ValueError``.
        """
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
        return job.model_copy(update={"enqueued_at": self._now()})

    def _now(self) -> datetime:
        """The current time as this worker sees it (a test worker may run on its own clock)."""
        return datetime.now(UTC)

    @property
    @abc.abstractmethod
    def failed(self) -> FailedJobs:
        """The parked jobs of this worker's queues: list, show, retry, purge."""

    @abc.abstractmethod
    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        """Place ``job`` (with ``headers``) so it runs after ``delay_s`` seconds; return its id."""

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Begin taking jobs; see :meth:`amqp_worker.Worker.start`. Idempotent."""
        # Two concurrent start() calls must not both begin (two consumers per queue).
        async with self._starting:
            if self._running:
                return
            await self._prepare()
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
        """Stop taking jobs and wait for running handlers; see :meth:`amqp_worker.Worker.stop`."""
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

    def _warn_timeouts_over(self, limit_s: float | None) -> None:
        """Warn about handlers whose timeout exceeds the broker's consumer timeout ``limit_s``."""
        if limit_s is None:
            return
        for name, spec in sorted(self._handlers.items()):
            timeout = self._timeout_for(spec)
            if timeout is not None and timeout > limit_s:
                logger.warning(
                    "handler %r has timeout_s=%g, longer than the broker's consumer timeout "
                    "(%gs, consumer_timeout_s): RabbitMQ would close the channel and redeliver "
                    "the job before the handler times out",
                    name,
                    timeout,
                    limit_s,
                )

    async def _run(
        self,
        delivery: D,
        job: Job,
        queue: str,
        headers: Mapping[str, Any],
        history: Sequence[AttemptRecord] = (),
    ) -> None:
        """Run one attempt of ``job`` and settle ``delivery``: the flow every worker shares.

        Success settles it (:meth:`_succeeded`). A failure is logged and told
        to the hooks once, added to the job's ``history``, and then, per the
        handler's retry policy, either enqueued again with ``attempt + 1``
        (:meth:`_retry_later`) or parked with the whole history
        (:meth:`_park`). A timed-out sync handler keeps its slot until its
        thread returns.
        """
        spec = self._handlers.get(job.handler)
        timeout_s = self._timeout_for(spec) if spec is not None else None
        outcome = await run_attempt(
            spec,
            job,
            queue,
            headers,
            hooks=self.hooks,
            threads=self._pool.threads,
            timeout_s=timeout_s,
            on_loop=self._on_loop if self._watchdog is not None else None,
        )
        if outcome.error is None:
            await self._succeeded(delivery, job)
            return
        policy = spec.retry if spec is not None and spec.retry is not None else self.retry
        decision = decide(policy, job.attempt, outcome.error)
        await report_failure(self.hooks, job, queue, outcome, decision, headers)
        history = [*history, AttemptRecord.of(job.attempt, outcome.error)]
        if decision.retry:
            retry = job.model_copy(update={"attempt": job.attempt + 1})
            await self._retry_later(delivery, retry, queue, decision.delay_s, history)
        else:
            await self._park(delivery, job, queue, decision.reason, outcome.error, history)
        await outcome.wait_linger()

    async def _succeeded(self, delivery: D, job: Job) -> None:
        """Settle the delivery of a job whose handler succeeded (ack it)."""

    @abc.abstractmethod
    async def _retry_later(
        self, delivery: D, retry: Job, queue: str, delay_s: float, history: list[AttemptRecord]
    ) -> None:
        """Enqueue ``retry`` (the next attempt) after ``delay_s``, then settle ``delivery``."""

    @abc.abstractmethod
    async def _park(
        self,
        delivery: D,
        job: Job,
        queue: str,
        reason: FailureReason,
        error: BaseException,
        history: list[AttemptRecord],
    ) -> None:
        """Keep ``job`` as a failed job with ``reason`` and ``history``, then settle ``delivery``.

        Tell the ``on_parked`` hooks (:func:`~amqp_worker.attempt.tell_parked`) once it is kept.
        """
