"""A blocking publisher for sync code: Flask and Django views, scripts, cron jobs.

::

    from amqp_worker import Job
    from amqp_worker.sync import Publisher

    publisher = Publisher()  # settings from AMQP_WORKER_*; one per process

    def signup(request):
        job_id = publisher.perform(Job(queue="emails", handler="welcome", args={...}))

It wraps a publish-only :class:`~amqp_worker.AMQPWorker` running on an event
loop in one background thread of its own. Every call blocks until the broker
confirmed the job (or raises), and may come from any number of threads.
See ``docs/sync.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import os
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from .amqp import AMQPWorker
from .defaults import DEFAULT_STOP_TIMEOUT_S
from .errors import PublishError
from .job import Job
from .settings import AMQPSettings, WorkerOptions

__all__ = ["Publisher"]

logger = logging.getLogger("amqp_worker")

T = TypeVar("T")

#: Name of the background thread, to spot it in thread dumps.
THREAD_NAME = "amqp-worker-publisher"

#: Margin on top of the worker's own deadlines before a blocked caller stops waiting.
#: The worker raises BrokerUnavailable by itself after publish_timeout_s; this margin
#: only guards against a loop thread that stopped answering (a blocking hook, a bug).
GRACE_S = 10.0

#: Longest the thread waits, at its very end, for leftover tasks to take their cancellation.
TEARDOWN_S = 5.0


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
        self._worker = AMQPWorker(url, settings=settings, **options)
        # Guards the caller-side state below; never held while waiting for the loop thread.
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._pid = 0
        #: The futures of calls in progress, for close() to wait on.
        self._pending: set[concurrent.futures.Future[Any]] = set()
        #: Completed by close() when it gives up on calls in progress: releases their callers.
        self._abandoned: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: Set once close() is done, for a second close() to wait on.
        self._closed_done = threading.Event()
        #: The publishing tasks, touched only on the loop thread.
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        # The worker's repr shows where the broker is, never its credentials.
        if self._closed:
            state = "closed"
        elif self._thread is None:
            state = "idle"
        else:
            state = "open"
        return f"<Publisher {state} {self._worker!r}>"

    @property
    def worker(self) -> AMQPWorker:
        """The publish-only worker underneath: its settings, and ``worker.hooks.on_publish``."""
        return self._worker

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; every later ``perform*`` raises."""
        return self._closed

    def wait_bound_s(self, jobs: int = 1) -> float:
        """Longest a call publishing ``jobs`` jobs waits for the background thread, in seconds.

        One ``publish_timeout_s`` to connect, one per job (the most a pipelined
        ``perform_many`` can take, wave after wave of confirms), one for the
        re-publish after an unroutable return, plus :data:`GRACE_S`. It is a
        safety net: a healthy worker answers well within it.
        """
        return self._worker.settings.publish_timeout_s * (2 + max(jobs, 1)) + GRACE_S

    # -- the background thread ------------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        """Start the thread and its loop on first use; call with ``_lock`` held."""
        if self._loop is not None:
            if self._pid != os.getpid():
                raise RuntimeError(
                    "this Publisher's thread was started in another process (before a fork): "
                    "create a Publisher in each process, or do not publish before forking"
                )
            return self._loop
        loop = asyncio.new_event_loop()
        stopping = asyncio.Event()
        thread = threading.Thread(
            target=self._serve, args=(loop, stopping), name=THREAD_NAME, daemon=True
        )
        thread.start()
        self._loop, self._stopping, self._thread = loop, stopping, thread
        self._pid = os.getpid()
        return loop

    def _serve(self, loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
        """The background thread: publish until close(), finish, stop the worker, tear down."""
        try:
            loop.run_until_complete(self._until_closed(stopping))
        finally:
            try:
                _cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _until_closed(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        if self._tasks:
            # Calls in progress end by themselves within publish_timeout_s; let them,
            # rather than cancel a publish the broker may be confirming.
            _, stuck = await asyncio.wait(set(self._tasks), timeout=self.wait_bound_s())
            if stuck:
                logger.warning("publisher: %d publish(es) never ended", len(stuck))
        stop_bound_s = self._worker.settings.publish_timeout_s + GRACE_S
        try:
            async with asyncio.timeout(stop_bound_s):
                await self._worker.stop(timeout_s=0)
        except TimeoutError:
            logger.warning("publisher: the connection did not close within %gs", stop_bound_s)
        except Exception:
            logger.exception("publisher: closing the connection failed")

    async def _in_context(self, ctx: contextvars.Context, coroutine: Coroutine[Any, Any, T]) -> T:
        # Run in the caller's context, so on_publish hooks see its contextvars (the
        # current span), and track the task so that close() can wait for it.
        task = asyncio.get_running_loop().create_task(coroutine, context=ctx)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await task

    def _call(self, coroutine: Coroutine[Any, Any, T], job_ids: tuple[str, ...]) -> T:
        """Run ``coroutine`` on the loop thread; block for its result or exception."""
        wrapped = self._in_context(contextvars.copy_context(), coroutine)
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                raise RuntimeError(
                    "Publisher blocks, and this thread runs an event loop (waiting here "
                    "would stall or deadlock it): use AMQPWorker and await its perform "
                    "methods in async code"
                )
            with self._lock:
                if self._closed:
                    raise RuntimeError("this Publisher is closed; create a new one to publish")
                future = asyncio.run_coroutine_threadsafe(wrapped, self._ensure_started())
                self._pending.add(future)
        except BaseException:
            # Never started: close them, or Python warns they were never awaited.
            wrapped.close()
            coroutine.close()
            raise
        future.add_done_callback(self._forget)
        bound_s = self.wait_bound_s(len(job_ids))
        waiting: list[concurrent.futures.Future[Any]] = [future, self._abandoned]
        concurrent.futures.wait(
            waiting, timeout=bound_s, return_when=concurrent.futures.FIRST_COMPLETED
        )
        if future.done():
            # result() re-raises the worker's exception object itself, traceback included.
            return future.result()
        if self._abandoned.done():
            raise PublishError(
                "the Publisher was closed before the broker confirmed; "
                "the job may or may not be enqueued",
                job_ids,
            )
        raise PublishError(
            f"no answer from the publisher thread within {bound_s:g}s; "
            "the job may or may not be enqueued",
            job_ids,
        )

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

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
        if timeout_s is not None and not (timeout_s >= 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a finite number >= 0 or None, got {timeout_s!r}")
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("a Publisher cannot be closed from its own thread")
        with self._lock:
            already, self._closed = self._closed, True
            pending = list(self._pending)
            loop, thread, stopping = self._loop, self._thread, self._stopping
        if already:
            self._closed_done.wait(self.wait_bound_s() if timeout_s is None else timeout_s)
            return
        try:
            if loop is None or thread is None or stopping is None:
                return  # never published: no thread, no connection
            _, running = concurrent.futures.wait(pending, timeout=timeout_s)
            loop.call_soon_threadsafe(stopping.set)
            if running:
                self._abandoned.set_result(None)
                logger.warning(
                    "publisher closed with %d call(s) in progress: they end in the background",
                    len(running),
                )
                return
            thread.join(self._worker.settings.publish_timeout_s + GRACE_S + TEARDOWN_S)
            if thread.is_alive():
                logger.warning("publisher: thread %s did not end; left as a daemon", thread.name)
        finally:
            self._closed_done.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    # As asyncio.run() does, but bounded: a task that swallows its cancellation
    # (a library's reconnect loop, say) must not keep the thread alive forever.
    leftovers = asyncio.all_tasks(loop)
    if not leftovers:
        return
    for task in leftovers:
        task.cancel()
    _, stuck = loop.run_until_complete(asyncio.wait(leftovers, timeout=TEARDOWN_S))
    if stuck:
        logger.warning(
            "publisher: %d task(s) ignored cancellation for %gs; closing the loop anyway",
            len(stuck),
            TEARDOWN_S,
        )


def _ids(jobs: list[Job]) -> tuple[str, ...]:
    # For a PublishError raised here; a non-Job is the worker's TypeError to report.
    return tuple(job.id for job in jobs if isinstance(job, Job))
