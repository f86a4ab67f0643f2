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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from .amqp import AMQPWorker, WorkerOptions
from .job import Job
from .settings import AMQPSettings

__all__ = ["Publisher"]

T = TypeVar("T")

#: Extra wait past ``publish_timeout_s`` before a blocked caller gives up on the loop thread.
#: The worker itself raises BrokerUnavailable after publish_timeout_s; this only guards hangs.
GRACE_S = 10.0


class Publisher:
    """Enqueue jobs from sync code; each method blocks until the broker confirmed.

    Takes the same ``url``, ``settings`` and keyword options as
    :class:`~amqp_worker.AMQPWorker`. The thread and its loop start here; the
    connection is made on the first publish. Errors reach the caller with
    their own types (:class:`~amqp_worker.errors.PublishError`,
    :class:`~amqp_worker.errors.BrokerUnavailable`, ``ValueError``...).

    Do not call it from a thread that runs an event loop: use ``AMQPWorker``
    there (``await worker.perform(...)``). Call :meth:`close` (or use ``with``)
    at shutdown to close the connection and end the thread; the thread is a
    daemon, so a forgotten close never keeps the process alive.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AMQPSettings | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        self._worker = AMQPWorker(url, settings=settings, **options)
        self._wait_s = self._worker.settings.publish_timeout_s * 2 + GRACE_S
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="amqp-worker-publisher", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Publisher {state} {self._worker.settings.broker}>"

    @property
    def worker(self) -> AMQPWorker:
        """The publish-only worker underneath: its settings, and hooks to add (on_publish)."""
        return self._worker

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            coroutine.close()
            raise RuntimeError(
                "Publisher blocks, and this thread runs an event loop: "
                "use AMQPWorker and await its perform methods here"
            )
        with self._lock:
            if self._closed:
                coroutine.close()
                raise RuntimeError("this Publisher is closed")
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self._wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"no answer from the publisher thread within {self._wait_s:g}s"
            ) from None

    def perform(self, job: Job) -> str:
        """Enqueue ``job`` now; return its id once the broker confirmed it."""
        return self._call(self._worker.perform(job))

    def perform_in(self, job: Job, delay: timedelta | float) -> str:
        """Enqueue ``job`` to run after ``delay`` (seconds or a timedelta); return its id."""
        return self._call(self._worker.perform_in(job, delay))

    def perform_at(self, job: Job, when: datetime) -> str:
        """Enqueue ``job`` to run at ``when`` (timezone-aware); return its id."""
        return self._call(self._worker.perform_at(job, when))

    def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue ``jobs`` with pipelined confirms; return their ids (see AMQPWorker)."""
        return self._call(self._worker.perform_many(list(jobs)))

    def close(self) -> None:
        """Close the connection and end the thread. Idempotent; later calls raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._worker.stop(), self._loop).result(self._wait_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self._wait_s)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
