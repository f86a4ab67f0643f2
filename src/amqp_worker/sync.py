"""A blocking publisher for sync code: Flask and Django views, scripts, cron jobs.

::

    from amqp_worker import Job
    from amqp_worker.sync import Publisher

    publisher = Publisher()  # settings from AMQP_WORKER_*; one per process

    def signup(request):
        job_id = publisher.perform(Job(queue="emails", handler="welcome", args={...}))

It wraps a publish-only :class:`~amqp_worker.AMQPWorker` running on an event
loop in one background thread of its own (a :class:`~amqp_worker._loop_thread.LoopThread`).
Every call blocks until the broker confirmed the job (or raises), and may come
from any number of threads. See ``docs/sync.md``.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from ._core.defaults import DEFAULT_STOP_TIMEOUT_S
from ._core.hooks import Hooks
from ._core.job import Job
from ._loop_thread import LoopThread, Unanswered
from ._rabbitmq.settings import AMQPSettings, WorkerOptions
from ._rabbitmq.worker import AMQPWorker
from .errors import PublishError

__all__ = ["Publisher"]

T = TypeVar("T")

#: Name of the background thread, to spot it in thread dumps.
THREAD_NAME = "amqp-worker-publisher"

#: Margin on top of the worker's own deadlines before a blocked caller stops waiting.
#: The worker raises BrokerUnavailable by itself after publish_timeout_s; this margin
#: only guards against a loop thread that stopped answering (a blocking hook, a bug).
GRACE_S = 10.0


class Publisher:
    """Enqueue jobs from sync code; each method blocks until the broker confirmed.

    Takes the same ``url``, ``settings`` and keyword options as
    :class:`~amqp_worker.AMQPWorker` (so ``AMQP_WORKER_*`` variables apply),
    and bad values raise :class:`~amqp_worker.errors.ConfigurationError` here.
    Nothing else happens in the constructor: the background thread and its
    event loop start on the first ``perform*`` call, which also connects. So
    a ``Publisher`` made at import time in a pre-fork server (gunicorn
    ``--preload``) works, as long as the parent process does not publish; one
    whose thread started in another process raises ``RuntimeError`` rather
    than hang.

    Semantics of every ``perform*`` method:

    - it returns the job id only once the broker confirmed the job, exactly
      as ``await worker.perform*(...)`` does;
    - errors reach the caller unchanged, with their types and tracebacks
      (:class:`~amqp_worker.errors.PublishError`,
      :class:`~amqp_worker.errors.BrokerUnavailable`, ``ValueError`` for a
      naive datetime or a negative delay, ``TypeError``...);
    - the caller's :mod:`contextvars` (the current OpenTelemetry span, for
      one) are what the worker's ``on_publish`` hooks see;
    - it never waits forever. The worker gives up by itself after
      ``publish_timeout_s``; if the background thread has not answered within
      :meth:`wait_bound_s` (derived from it), the caller gets a
      :class:`~amqp_worker.errors.PublishError` anyway. The Publisher never
      cancels a publish in progress (a connect cancelled midway would leave
      aio-pika reconnecting forever), so such a job may still be enqueued.

    Any number of threads may call it at once: they share one connection and
    one publish channel, and their confirms are awaited concurrently. Do not
    call it from a thread that runs an event loop (``RuntimeError``): use
    ``AMQPWorker`` there, and ``await worker.perform(...)``.

    Call :meth:`close` (or use ``with``) at shutdown to close the connection
    and end the thread. The thread is a daemon, so a forgotten ``close`` never
    keeps the process alive; jobs already confirmed are safe either way.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AMQPSettings | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        # Not exposed: its start() would consume on the wrong loop, and only the loop
        # thread may touch it once publishing began. hooks and settings are what users need.
        self._worker = AMQPWorker(url, settings=settings, **options)
        self._thread = LoopThread(
            THREAD_NAME,
            # Closes the connection; the worker never consumed, so nothing else to stop.
            on_stop=partial(self._worker.stop, timeout_s=0),
            stop_timeout_s=self._worker.settings.publish_timeout_s + GRACE_S,
            owner="Publisher",
            in_loop_hint="use AMQPWorker and await its perform methods in async code",
        )

    def __repr__(self) -> str:
        # The worker's repr shows where the broker is, never its credentials.
        return f"<Publisher {self._thread.state} {self._worker!r}>"

    @property
    def hooks(self) -> Hooks:
        """The worker's hooks: ``publisher.hooks.on_publish(...)`` registers a publish hook.

        ``on_publish`` hooks run on the background thread, in the calling
        thread's contextvars; one that blocks stalls every caller.
        """
        return self._worker.hooks

    @property
    def settings(self) -> AMQPSettings:
        """The immutable settings the worker underneath was built with."""
        return self._worker.settings

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; every later ``perform*`` raises."""
        return self._thread.closed

    def wait_bound_s(self, jobs: int = 1) -> float:
        """Longest a call publishing ``jobs`` jobs waits for the background thread, in seconds.

        One ``publish_timeout_s`` to connect, one per job (the most a pipelined
        ``perform_many`` can take, wave after wave of confirms), one for the
        re-publish after an unroutable return, plus :data:`GRACE_S`. It is a
        safety net: a healthy worker answers well within it.
        """
        return self._worker.settings.publish_timeout_s * (2 + max(jobs, 1)) + GRACE_S

    def _call(self, coroutine: Coroutine[Any, Any, T], job_ids: tuple[str, ...]) -> T:
        """Run ``coroutine`` on the loop thread; block for its result or exception."""
        bound_s = self.wait_bound_s(len(job_ids))
        try:
            return self._thread.run(coroutine, bound_s)
        except Unanswered as exc:
            if exc.abandoned:
                reason = "the Publisher was closed before the broker confirmed"
            else:
                reason = f"no answer from the publisher thread within {bound_s:g}s"
            raise PublishError(f"{reason}; the job may or may not be enqueued", job_ids) from None

    # -- publishing ------------------------------------------------------------------

    def perform(self, job: Job) -> str:
        """Enqueue ``job`` to run as soon as possible; return its id once confirmed."""
        return self._call(self._worker.perform(job), _ids([job]))

    def perform_in(self, job: Job, delay: timedelta | float) -> str:
        """Enqueue ``job`` to run after ``delay`` (a timedelta or seconds); return its id.

        A negative or non-finite delay raises ``ValueError``.
        """
        return self._call(self._worker.perform_in(job, delay), _ids([job]))

    def perform_at(self, job: Job, when: datetime) -> str:
        """Enqueue ``job`` to run at ``when``; return its id. Past times run as soon as possible.

        ``when`` must be timezone-aware: a naive datetime raises ``ValueError``.
        """
        return self._call(self._worker.perform_at(job, when), _ids([job]))

    def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue ``jobs`` with pipelined confirms; return their ids in order.

        ``jobs`` is read in the calling thread. If some jobs are not confirmed,
        raises :class:`~amqp_worker.errors.PublishError` whose ``job_ids`` lists
        them; the others are enqueued.
        """
        batch = list(jobs)
        return self._call(self._worker.perform_many(batch), _ids(batch))

    # -- shutdown --------------------------------------------------------------------

    def close(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Refuse new calls, let calls in progress finish, close the connection, end the thread.

        New calls raise ``RuntimeError`` at once. Calls in progress get up to
        ``timeout_s`` seconds (``None``: as long as they take, which
        :meth:`wait_bound_s` bounds); then the worker is stopped, closing its
        connection, and the thread is joined. If some are still in progress
        after ``timeout_s``, ``close`` returns anyway: their callers get a
        :class:`~amqp_worker.errors.PublishError` (the job may or may not be
        enqueued), and the daemon thread lets those publishes end (within
        ``publish_timeout_s``), closes the connection and ends by itself.

        Idempotent: a later call returns once the first one is done. Blocks,
        but may be called from async code (an app's shutdown hook); not from
        the publisher's own thread (an ``on_publish`` hook).
        """
        self._thread.close(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ids(jobs: list[Job]) -> tuple[str, ...]:
    # For a PublishError raised here; a non-Job is the worker's TypeError to report.
    return tuple(job.id for job in jobs if isinstance(job, Job))
