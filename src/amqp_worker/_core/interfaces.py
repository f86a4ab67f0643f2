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
contract test suite checks them all. Integrations (metrics, tracing, the CLI)
rely on nothing else. Parked jobs are reached through ``worker.failed``, a
:class:`FailedJobs`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from .defaults import DEFAULT_STOP_TIMEOUT_S
from .failures import FailedJob, FailedJobsResult
from .groups import GroupHandle, GroupStatus
from .handlers import Handler
from .hooks import Hooks
from .job import Job
from .results import JobHandle
from .retry import RetryPolicy
from .schedule import MissedPolicy, Schedule
from .typed import HandlerDecorator
from .workflow import Chain, Group

__all__ = ["FailedJobs", "Worker"]


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

    hooks: Hooks
    """Callbacks around every job (:mod:`amqp_worker._core.hooks`); metrics and tracing use them."""

    retry: RetryPolicy
    """The retry policy of handlers registered without one."""

    timeout_s: float | None
    """The timeout of handlers registered without one; None means no limit."""

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`: the worker is taking jobs."""
        ...

    @property
    def max_concurrency(self) -> int:
        """The most handlers that run at once."""
        ...

    @property
    def handlers(self) -> tuple[str, ...]:
        """Names of the registered handlers, sorted."""
        ...

    @property
    def failed(self) -> FailedJobs:
        """The parked jobs of this worker's queues: list, show, retry, purge."""
        ...

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
        ...

    async def start(self) -> None:
        """Begin running jobs. Jobs enqueued earlier wait and run now.

        Calling it on a running worker does nothing; after :meth:`stop` it
        starts the worker again. A start that the broker's connection ends
        midway (a transient error) is cleaned up and tried again, three
        tries in all, a second apart; anything else raises at once.
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

    async def perform(self, job: Job) -> JobHandle:
        """Enqueue ``job`` to run as soon as possible; return its id, as a :class:`JobHandle`.

        The handle is the id (a ``str``) and can wait for the job's result
        (``await handle.result(timeout_s=...)``) when its handler keeps one.
        ``job`` is not mutated. A ``job.unique_key`` that is live raises
        :class:`~amqp_worker.errors.DuplicateJob`, and nothing is enqueued
        (every ``perform*``; docs/controls.md#unique-jobs).
        """
        ...

    async def perform_at(self, job: Job, when: datetime) -> JobHandle:
        """Enqueue ``job`` to run at ``when``, a timezone-aware datetime; return its handle.

        A time in the past runs as soon as possible. A naive datetime is
        ambiguous and raises ``ValueError``. ``job`` is not mutated.
        """
        ...

    async def perform_in(self, job: Job, delay: timedelta | float) -> JobHandle:
        """Enqueue ``job`` to run ``delay`` after now (seconds if a number); return its handle.

        The delay counts from this call. A negative or non-finite delay raises
        ``ValueError``. ``job`` is not mutated.
        """
        ...

    async def perform_many(self, jobs: Iterable[Job]) -> builtins.list[str]:
        """Enqueue several jobs to run as soon as possible; return their ids in order.

        If some are not enqueued, raises :class:`~amqp_worker.errors.PublishError`
        whose ``job_ids`` lists them; the others are enqueued. The ids are
        :class:`JobHandle` s. Unique keys are all taken first, or none: a live
        one (or one twice in ``jobs``) raises ``DuplicateJob`` and enqueues nothing.
        """
        ...

    def handle(self, job_id: str, since: datetime | None = None) -> JobHandle:
        """A :class:`JobHandle` for a job known only by its id (from any process).

        ``since``: when the job was enqueued, or later; the result is looked
        for from then on (default: as far back as results are kept).
        """
        ...

    async def perform_chain(self, chain: Chain) -> JobHandle:
        """Enqueue a :func:`~amqp_worker.chain`; return the handle of its last step.

        Each step is enqueued by the worker that finished the step before it,
        before that step is acked. A parked step stops the chain; retrying it
        from the failed jobs continues it.
        """
        ...

    async def perform_group(self, group: Group) -> GroupHandle:
        """Enqueue a :func:`~amqp_worker.group`; its callback runs once, after every member succeeded.

        Raises :class:`~amqp_worker.errors.GroupExists` if a group with this
        id is still open.
        """
        ...

    async def group_status(self, group_id: str) -> GroupStatus:
        """Where the group ``group_id`` stands: members succeeded, parked, pending."""
        ...

    async def cancel(self, job_id: str, *more_ids: str) -> None:
        """Cancel the jobs with these ids, wherever they are; return once the cancel is durable.

        - A queued, delayed or retrying job never runs again: when it reaches
          a worker, it is parked with reason ``cancelled``
          (:class:`~amqp_worker.errors.JobCancelled`) instead of starting.
        - A running job is told: an async handler's task is cancelled; a sync
          handler (it cannot be interrupted) sees the ``threading.Event`` of
          its ``cancelled`` parameter set. Either way the attempt ends as
          cancelled whatever the handler then does: parked ``cancelled``,
          never counted a success (no result, no next chain step), never retried.
        - A handler with ``result=True`` leaves a failure record:
          ``handle.result()`` raises :class:`~amqp_worker.errors.JobFailed`
          with reason ``cancelled``.
        - Idempotent, and never an error for an id no worker knows or a job
          that has finished: nothing happens to those (a finished job keeps
          its result); the id is remembered for ``cancel_ttl_s`` (7 days), so
          a job enqueued with it in that time is cancelled too.
        - Reaches every worker process, and workers started later (AMQPWorker:
          the cancellations stream; a cancel older than ``cancel_ttl_s`` is
          forgotten). SimpleWorker parks its queued and delayed copies at once.

        Raises ``TypeError``/``ValueError`` for an id that is not a job id, and a
        :class:`~amqp_worker.errors.BrokerError` if the cancel was not made
        durable (then it may have reached this process only: call it again).
        """
        ...

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
        """Register ``handler`` for jobs whose ``handler`` field is ``name``.

        ``retry`` and ``timeout_s`` override the worker's defaults for this
        handler (``math.inf``: no timeout). With ``result=True`` its return
        value is kept as the job's result for ``result_ttl_s`` (serialised by
        its return annotation; a value that is not JSON parks the job with
        reason ``invalid_result``), and a parked job leaves its failure
        record. With ``max_age_s``, an attempt that has not started within that
        many seconds of being due (enqueued, or its delay or retry backoff
        over) never runs: it is parked with reason ``expired`` (as is a job
        past its own ``Job.expires_at``; docs/controls.md).

        ``rate`` (``"50/s"``, ``"10/min"``, ``"100/h"``) and ``burst`` (default
        1) limit how many attempts start, and ``concurrency`` how many run at
        once, across every worker of this ``name`` (docs/controls.md): in any
        window of T seconds at most ``burst + rate * T`` attempts start. Jobs
        over a limit wait in the broker (in memory for SimpleWorker). With
        ``limit_key`` (an args field name, or a function of the job) both
        limits hold per key value: at most the rate's count per key in any
        window of its unit (no ``burst``), at most ``concurrency`` per key at
        once; jobs without a key share the key ``""``. Every
        worker must register the handler with the same limits; a limited
        handler must be registered before :meth:`start`. Raises
        :class:`~amqp_worker.errors.InvalidHandler` for an empty or illegal
        name, a non-callable or bad options, and
        :class:`~amqp_worker.errors.HandlerAlreadyRegistered` for a name
        already taken. Allowed before or after :meth:`start`.
        """
        ...

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
        """Decorator form of :meth:`register`.

        A function whose first parameter is a pydantic model comes back as a
        :class:`~amqp_worker.TypedHandler`: callable as before, plus
        ``perform(args)``/``perform_in``/``perform_at`` on this worker, typed by
        that model, onto ``queue`` (default: :attr:`default_queue`). Any other
        function comes back unchanged.
        """
        ...

    @property
    def default_queue(self) -> str:
        """The queue a typed handler's ``perform`` uses when neither it nor the call names one.

        ``"default"`` unless the worker is told otherwise; an AMQPWorker's first queue.
        """
        ...

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
        ...

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The schedules declared on this worker, by name (a copy)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class FailedJobs(Protocol):
    """The parked jobs of a worker's queues (``worker.failed``).

    A job is parked, with the reason and every attempt's error, when it ran
    out of retries, failed with :class:`~amqp_worker.PermanentError`, or
    could not run at all (invalid args, unknown handler, a body that is not a
    job). ``queue`` narrows any operation to one job queue; by default it
    covers all of the worker's queues. Reading never removes or reorders.
    Bulk operations take one pass over each failed-jobs queue, whatever the
    number of ids.
    """

    async def list(
        self, queue: str | None = None, limit: int | None = None
    ) -> builtins.list[FailedJob]:
        """Parked jobs, oldest first (at most ``limit``), without removing any."""
        ...

    async def show(self, job_id: str, queue: str | None = None) -> FailedJob:
        """One parked job; :class:`~amqp_worker.errors.FailedJobNotFound` if there is none."""
        ...

    async def retry(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Enqueue parked jobs again with ``attempt`` reset to 0 (``ids=None``: all of them).

        A job is confirmed on its work queue before its failed copy is
        removed, so a crash in between duplicates it, never loses it. Running
        the same retry twice finds the ids gone (``not_found``). Parked bodies
        that are not valid jobs stay where they are (``skipped``).
        """
        ...

    async def purge(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Delete parked jobs for good (``ids=None``: all of them)."""
        ...
