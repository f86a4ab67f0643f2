"""An asyncio event loop in one daemon thread, for blocking code to run coroutines on.

:class:`LoopThread` is what :class:`amqp_worker.sync.Publisher` stands on::

    runner = LoopThread("my-loop", on_stop=client.aclose, stop_timeout_s=10)
    result = runner.run(client.fetch(), timeout_s=30)  # blocks; any thread may call it
    runner.close()

Why not ``anyio.from_thread.start_blocking_portal``: a forgotten ``close``
hangs the interpreter at exit. anyio 4.0 to 4.4 run the portal's loop in a
``ThreadPoolExecutor`` thread, which ``concurrent.futures`` joins at exit;
later versions use a daemon thread, but the portal's context manager, left
open, is finalized at exit and waits for that thread, frozen by then, to
stop. Its exit also joins the thread without a bound, and its stop waits for
or cancels every task, so a bounded ``close`` that gives up on a call without
cancelling it cannot be built on it; and it checks neither forks nor callers
that run another event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = ["TEARDOWN_S", "LoopThread", "Unanswered"]

logger = logging.getLogger("amqp_worker")

T = TypeVar("T")

#: Longest the thread waits, at its very end, for leftover tasks to take their cancellation.
TEARDOWN_S = 5.0


class Unanswered(Exception):
    """A call's caller stopped waiting before its coroutine finished.

    ``abandoned`` is True when :meth:`LoopThread.close` gave up on the call,
    False when the call's own ``timeout_s`` passed. The coroutine was not
    cancelled: it may still finish, with effects.
    """

    def __init__(self, message: str, *, abandoned: bool) -> None:
        super().__init__(message)
        self.abandoned = abandoned


@dataclass(frozen=True)
class _Started:
    """What the first call started, fixed from then on."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    #: The process that started the thread: after a fork, the child has no such thread.
    pid: int


class LoopThread:
    """Runs coroutines, submitted from any thread, on one event loop in a daemon thread.

    Nothing starts in the constructor: the thread and its loop start on the
    first :meth:`run`, so an instance made at import time in a pre-fork
    server is fine as long as the parent never runs anything on it.

    - :meth:`run` blocks until the coroutine finished and returns its result,
      or raises its exception (the very object, traceback included). The
      coroutine runs in a copy of the caller's :mod:`contextvars` context.
      It waits at most ``timeout_s``, then raises :class:`Unanswered`
      without cancelling the coroutine.
    - It raises ``RuntimeError``, before anything starts, when called from a
      thread that runs an event loop (waiting there would stall that loop,
      or deadlock it if it is this one), after :meth:`close`, or in another
      process than the one that started the thread (a forked child).
    - Any number of threads may call it at once; their coroutines run
      concurrently on the one loop.
    - :meth:`close` (or ``with``) is bounded and idempotent; see there. The
      thread is a daemon: a forgotten ``close`` never keeps the process alive
      at exit.

    ``on_stop`` is awaited on the loop when it closes, after the calls in
    progress ended, for at most ``stop_timeout_s`` (to close connections).
    ``name`` names the thread; ``owner`` and ``in_loop_hint`` word the
    ``RuntimeError`` messages for the class built on this one.
    """

    def __init__(
        self,
        name: str,
        *,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        stop_timeout_s: float = 10.0,
        owner: str = "LoopThread",
        in_loop_hint: str = "",
    ) -> None:
        self.name = name
        self._on_stop = on_stop
        self._stop_timeout_s = stop_timeout_s
        self._owner = owner
        self._in_loop_hint = in_loop_hint
        # Guards the three fields below; never held while waiting for the loop thread.
        self._lock = threading.Lock()
        self._started: _Started | None = None
        self._closed = False
        #: Calls in progress (their futures), with the monotonic time their callers stop waiting.
        self._calls: dict[concurrent.futures.Future[Any], float] = {}
        #: Completed by close() when it gives up on calls in progress: releases their callers.
        self._abandoned: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: Set once the first close() is done, for a later close() to wait on.
        self._closed_done = threading.Event()

    @property
    def state(self) -> str:
        """``"idle"`` before the first call, ``"open"`` once started, ``"closed"`` after close()."""
        if self._closed:
            return "closed"
        return "idle" if self._started is None else "open"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; every later :meth:`run` raises."""
        return self._closed

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run ``coroutine`` on the loop thread; block for its result, at most ``timeout_s``.

        Raises what the coroutine raised; :class:`Unanswered` if it has not
        finished within ``timeout_s`` or :meth:`close` gave up on it;
        ``RuntimeError`` if refused (see the class). A refused coroutine is
        closed, never started.
        """
        try:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                hint = f": {self._in_loop_hint}" if self._in_loop_hint else ""
                raise RuntimeError(
                    f"{self._owner} blocks, and this thread runs an event loop "
                    f"(waiting here would stall or deadlock it){hint}"
                )
            if self._forked():
                raise RuntimeError(
                    f"this {self._owner}'s thread was started in another process (before a "
                    f"fork): create a {self._owner} in each process, or do not use it before "
                    "forking"
                )
            with self._lock:
                started = self._start()
                # call_soon_threadsafe, underneath, runs its callback in a copy of this
                # thread's context, and the task it creates copies that: so the caller's
                # contextvars (the current span) are what the coroutine sees.
                future = asyncio.run_coroutine_threadsafe(coroutine, started.loop)
                self._calls[future] = time.monotonic() + timeout_s
        except BaseException:
            # Never started: close it, or Python warns it was never awaited.
            coroutine.close()
            raise
        future.add_done_callback(self._forget)
        waiting: list[concurrent.futures.Future[Any]] = [future, self._abandoned]
        concurrent.futures.wait(
            waiting,
            timeout=timeout_s,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        if future.done():
            # result() re-raises the coroutine's exception object itself, traceback included.
            return future.result()
        if self._abandoned.done():
            raise Unanswered(f"{self.name} was closed before the call finished", abandoned=True)
        raise Unanswered(f"no answer from {self.name} within {timeout_s:g}s", abandoned=False)

    def close(self, timeout_s: float | None = None) -> None:
        """Refuse new calls, let calls in progress finish, run ``on_stop``, end the thread.

        New calls raise ``RuntimeError`` at once. Calls in progress get up to
        ``timeout_s`` seconds (``None``: up to their own ``timeout_s``). If
        some are still in progress then, ``close`` returns at once: their
        callers get :class:`Unanswered`, and the thread lets those coroutines
        run until their own ``timeout_s``, then runs ``on_stop`` and ends by
        itself. Otherwise the thread runs ``on_stop`` (at most
        ``stop_timeout_s``), tears its loop down and is joined, at most
        ``stop_timeout_s + TEARDOWN_S`` (past that it is left as a daemon).

        Never started: nothing to stop. In another process than the one that
        started the thread (a forked child), the thread and its loop are the
        parent's: left alone. Idempotent: a later call waits for the first
        one to be done, at most its own ``timeout_s`` (``None``: the calls'
        own) plus ``stop_timeout_s + TEARDOWN_S``. May be called from a
        thread running an event loop, but not from this instance's own
        thread (``RuntimeError``).
        """
        if timeout_s is not None and not (timeout_s >= 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be a finite number >= 0 or None, got {timeout_s!r}")
        if self._forked():
            self._closed = True  # no lock: see _forked
            return
        if self._started is not None and threading.current_thread() is self._started.thread:
            raise RuntimeError(f"a {self._owner} cannot be closed from its own thread")
        with self._lock:
            already, self._closed = self._closed, True
            # Under the lock: a call starting the thread right now is either refused or seen here.
            started, calls = self._started, dict(self._calls)
        until = self._until(calls, timeout_s)
        if already:
            self._closed_done.wait(max(0.0, until - time.monotonic()) + self._join_bound_s)
            return
        try:
            if started is None:
                return
            _, running = concurrent.futures.wait(calls, timeout=max(0.0, until - time.monotonic()))
            # Those still running may go on until their callers' deadlines, not longer.
            drain_until = max((calls[future] for future in running), default=0.0)
            finish = self._finish(running, drain_until)
            try:
                asyncio.run_coroutine_threadsafe(finish, started.loop)
            except RuntimeError:
                finish.close()  # the loop is closed already: its thread has ended
                return
            if running:
                self._abandoned.set_result(None)
                logger.warning(
                    "%s closed with %d call(s) in progress: they end in the background",
                    self.name,
                    len(running),
                )
                return
            started.thread.join(self._join_bound_s)
            if started.thread.is_alive():
                logger.warning("%s did not end; left as a daemon", self.name)
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

    # -- internals --------------------------------------------------------------------

    @property
    def _join_bound_s(self) -> float:
        return self._stop_timeout_s + TEARDOWN_S

    def _start(self) -> _Started:
        """Start the thread and its loop on first use; call with ``_lock`` held."""
        if self._closed:
            raise RuntimeError(f"this {self._owner} is closed; create a new one")
        if self._started is not None:
            return self._started
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_serve, args=(loop,), name=self.name, daemon=True)
        try:
            thread.start()
        except BaseException:
            loop.close()
            raise
        self._started = _Started(loop, thread, os.getpid())
        return self._started

    def _forked(self) -> bool:
        """True in a forked child of the process that started the thread.

        The child has no such thread, and the loop is the parent's; ``_lock``
        may have been held at the fork by a thread that does not exist here,
        so this is checked before taking it. ``_started`` never changes once
        set, so reading it unlocked is safe.
        """
        started = self._started
        return started is not None and started.pid != os.getpid()

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._calls.pop(future, None)

    @staticmethod
    def _until(
        calls: dict[concurrent.futures.Future[Any], float], timeout_s: float | None
    ) -> float:
        """The monotonic time close() stops waiting for ``calls``."""
        if timeout_s is not None:
            return time.monotonic() + timeout_s
        return max(calls.values(), default=0.0)

    async def _finish(self, running: set[concurrent.futures.Future[Any]], until: float) -> None:
        """On the loop: let calls still in progress end, run on_stop, stop the loop."""
        try:
            if running:
                # Rather than cancel a call midway (a publish the broker may be confirming),
                # let it end by itself within its caller's deadline.
                waiting = {asyncio.wrap_future(future) for future in running}
                done, stuck = await asyncio.wait(
                    waiting, timeout=max(0.0, until - time.monotonic())
                )
                for copy in done:
                    # A copy of an outcome its caller had given up on: mark its exception
                    # seen, or asyncio logs "Future exception was never retrieved" at GC.
                    if not copy.cancelled():
                        copy.exception()
                if stuck:
                    logger.warning("%s: %d call(s) never ended", self.name, len(stuck))
            if self._on_stop is not None:
                try:
                    async with asyncio.timeout(self._stop_timeout_s):
                        await self._on_stop()
                except TimeoutError:
                    logger.warning(
                        "%s: on_stop did not end within %gs", self.name, self._stop_timeout_s
                    )
                except Exception:
                    logger.exception("%s: on_stop failed", self.name)
        finally:
            asyncio.get_running_loop().stop()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The thread: run the loop until close() stops it, then tear it down."""
    try:
        loop.run_forever()
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


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
            "%s: %d task(s) ignored cancellation for %gs; closing the loop anyway",
            threading.current_thread().name,
            len(stuck),
            TEARDOWN_S,
        )
