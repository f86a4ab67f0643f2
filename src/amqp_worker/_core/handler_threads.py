"""The threads sync handlers run on, with results handed back to the loop in batches.

A sync handler must never block the event loop, so it runs on a thread. The
standard ``loop.run_in_executor`` costs a wake-up of the loop per call (one
``call_soon_threadsafe``, one write to its self-pipe) plus the bookkeeping of
two chained futures; for short handlers that is most of the cost of a job.
Here a thread that finishes a call queues the result, and only the first
result queued since the loop last looked wakes it: the loop then settles every
result queued so far in one go.

Threads start on demand, one per call in flight, up to ``max_threads`` (the
worker's ``max_concurrency``, which already bounds the calls in flight); idle
ones wait for the next call and exit at :meth:`HandlerThreads.shutdown`.
A call cannot be interrupted: a timed-out handler runs on until it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["HandlerThreads"]

_Call = tuple[asyncio.Future[Any], Callable[[], Any]]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]


class HandlerThreads:
    """Up to ``max_threads`` threads running calls for one event loop."""

    def __init__(self, max_threads: int, *, name: str = "amqp-worker") -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self._max = max_threads
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Calls submitted and not yet settled on the loop: a thread per call is ensured.
        self._in_flight = 0
        self._lock = threading.Lock()
        self._results: list[_Result] = []
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads started so far (and not shut down)."""
        return len(self._threads)

    def run(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``call()`` on a thread; the future gets its result or exception.

        Call from the event loop. Cancelling the future does not stop the call.
        """
        if self._closed:
            raise RuntimeError("HandlerThreads.run() after shutdown()")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._in_flight += 1
        if self._in_flight > len(self._threads) and len(self._threads) < self._max:
            self._start_thread()
        self._calls.put((future, call))
        return future

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            future, call = item
            try:
                result: _Result = (future, call(), None)
            except BaseException as exc:  # handed to the awaiting task, as an executor would
                result = (future, None, exc)
            with self._lock:
                self._results.append(result)
                wake = len(self._results) == 1
            if wake:
                # Only the first result since the loop last looked wakes it up.
                assert self._loop is not None
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            results, self._results = self._results, []
        self._in_flight -= len(results)
        for future, value, error in results:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(value)
            elif isinstance(error, StopIteration):
                # A future cannot hold StopIteration (it would end the awaiting coroutine).
                future.set_exception(RuntimeError(f"handler raised StopIteration: {error}"))
            else:
                future.set_exception(error)

    def shutdown(self) -> None:
        """Cancel calls not started yet; idle threads exit, busy ones once their call returns.

        Never waits. Call from the event loop.
        """
        self._closed = True
        while True:
            try:
                item = self._calls.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._calls.put(None)
        self._threads = []
