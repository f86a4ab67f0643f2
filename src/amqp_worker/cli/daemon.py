"""One worker in this process until a signal: what ``amqp-worker run`` serves.

The first signal stops taking jobs and gives running handlers the shutdown
timeout; a second one stops at once (running handlers are cancelled and their
jobs go back to RabbitMQ, which redelivers them) and exits with
:attr:`ExitCode.FAILURE`. Under ``--processes`` each child process runs one
:class:`Daemon` (``cli/child.py``), which its supervisor signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import NoReturn

from amqp_worker import __version__
from amqp_worker._rabbitmq.worker import AMQPWorker

from .common import ExitCode
from .health import serve_health
from .loading import AnyWorker

__all__ = ["FORCED_STOP_S", "Daemon", "banner"]

logger = logging.getLogger("amqp_worker.cli")

#: How long a forced stop waits for the broker connection to close.
FORCED_STOP_S = 5.0


def banner(worker: AnyWorker) -> str:
    """One line on what is about to run; never credentials."""
    handlers = ",".join(worker.handlers) or "-"
    if isinstance(worker, AMQPWorker):
        s = worker.settings
        return (
            f"amqp-worker {__version__}: {s.broker} name={s.name} "
            f"queues={','.join(s.queues)} handlers={handlers} "
            f"concurrency={s.max_concurrency} prefetch={s.effective_prefetch}"
        )
    return (
        f"amqp-worker {__version__}: in-process SimpleWorker (persists nothing) "
        f"handlers={handlers} concurrency={worker.max_concurrency}"
    )


class Daemon:
    """Runs one worker until a signal; serves ``/healthz`` if asked."""

    def __init__(
        self,
        worker: AnyWorker,
        shutdown_timeout_s: float,
        health: tuple[str, int] | None = None,
    ) -> None:
        self.worker = worker
        self.shutdown_timeout_s = shutdown_timeout_s
        self.health = health
        self.running = False
        #: Set once the worker has started (and stays set).
        self.started = asyncio.Event()
        self._signalled = False
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def healthy(self) -> bool:
        """True while the worker runs and, for RabbitMQ, its connection is open."""
        if not self.running:
            return False
        if not isinstance(self.worker, AMQPWorker):
            return True
        return self.worker.connected

    def stop_soon(self) -> None:
        """Stop as the first signal would, without counting as one (a child's recycling).

        A signal after this is still a first signal, not the second that forces.
        """
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._signalled:
            self._signalled = True
            logger.info(
                "%s received: stopping; running jobs get up to %gs (send it again to stop now)",
                name,
                self.shutdown_timeout_s,
            )
            self._stop.set()
        elif not self._force.is_set():
            logger.warning("%s received again: stopping now", name)
            self._force.set()

    async def serve(self) -> ExitCode:
        """Start, run until a signal, stop; return the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        server: asyncio.Server | None = None
        try:
            server = await serve_health(self.health, self.healthy)
            if not await self._start():
                return ExitCode.OK
            self.running = True
            self.started.set()
            await self._stop.wait()
            self.running = False
            return await self._shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if server is not None:
                server.close()
                await server.wait_closed()

    async def _start(self) -> bool:
        """Start the worker; False if a signal came first."""
        starting = asyncio.ensure_future(self.worker.start())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await self.worker.stop(timeout_s=0)
            logger.info("stopped before the worker started")
            return False
        starting.result()  # raises BrokerUnavailable, TopologyConflict...
        return True

    async def _shutdown(self) -> ExitCode:
        graceful = asyncio.ensure_future(self.worker.stop(timeout_s=self.shutdown_timeout_s))
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({graceful, forced}, return_when=asyncio.FIRST_COMPLETED)
        if graceful.done():
            forced.cancel()
            graceful.result()
            logger.info("worker stopped")
            return ExitCode.OK
        # A second signal means now. Whatever the clean-up below waits on (a close that
        # outlives its cancellation, a loop blocked by a handler), the process ends
        # within FORCED_STOP_S + 1 s; unacked jobs go back to RabbitMQ either way.
        deadline = threading.Timer(FORCED_STOP_S + 1, _stopped_by_force)
        deadline.daemon = True
        deadline.start()
        graceful.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await graceful
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.worker.stop(timeout_s=0), FORCED_STOP_S)
        return _stopped_by_force()


def _stopped_by_force() -> NoReturn:
    logger.warning("worker stopped by force; unfinished jobs go back to RabbitMQ")
    _exit_now(ExitCode.FAILURE)


def _exit_now(code: ExitCode) -> NoReturn:
    """Exit at once, without waiting for handler threads that may never return."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(int(code))
