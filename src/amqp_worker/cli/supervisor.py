"""``amqp-worker run --processes N``: N worker processes under one supervisor.

Each child is a fresh interpreter (``python -m amqp_worker.cli _child``), never
a fork of this one: it imports the worker module itself and opens its own
connection, so no socket, lock or thread is ever shared across processes. The
supervisor holds no connection to RabbitMQ and runs no job.

- Each child gets one end of a socket pair: it writes status lines on it
  (started, a beat each second with its health, "replace me"), and reads it
  only to learn that the supervisor is gone (end of file), when it stops
  gracefully on its own.
- A child that dies is started again after a backoff (0.5 s, doubling, at most
  30 s; a child that ran 30 s starts the count afresh). A child that could not
  start at all before any child ever did (bad settings, broker unreachable)
  ends the daemon with that child's exit code, as one process would.
- A child that asks to be replaced (``--max-jobs-per-child``,
  ``--max-memory-per-child``) gets its successor at once, and finishes its
  running jobs while the successor starts.
- The first SIGTERM or SIGINT is passed to every child (each stops gracefully
  within the shutdown timeout); a second one is passed on too, and stops them
  now. Children run in sessions of their own, so a terminal's Ctrl-C reaches
  them only through the supervisor, once. A child still alive past the
  shutdown timeout and the forced-stop time is killed.
- One ``/healthz`` (200 while every child is running, beating and connected)
  and one ``/metrics`` (every child's series summed, through
  prometheus_client's multiprocess mode) for the whole daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import ExitCode
from .daemon import FORCED_STOP_S
from .health import serve_health
from .metrics_endpoint import FleetMetrics, serve_fleet_metrics
from .supervision import (
    CHILD_SPEC_ENV,
    MAX_STATUS_BYTES,
    STABLE_AFTER_S,
    ChildSpec,
    describe_exit,
    read_status,
    restart_delay_s,
)

__all__ = ["BEAT_STALE_S", "Supervisor", "SupervisorOptions"]

logger = logging.getLogger("amqp_worker.cli")

#: A child whose last beat is older than this counts as unhealthy (it beats every second).
BEAT_STALE_S = 5.0
#: A child started to replace one at its limit counts as healthy while it starts, this long:
#: a planned replacement is not an outage.
REPLACEMENT_GRACE_S = 30.0
#: Exit codes with which a child that never started ends the daemon, if no child ever started.
_FATAL_AT_START = frozenset({ExitCode.CONFIG, ExitCode.IMPORT, ExitCode.CONNECTION})


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    """What ``run`` hands the supervisor: the worker to run, how many, and the endpoints."""

    target: str
    processes: int
    shutdown_timeout_s: float
    log_level: str
    log_format: str
    overrides: dict[str, Any] = field(default_factory=dict)
    max_jobs: int | None = None
    max_memory_bytes: int | None = None
    health: tuple[str, int] | None = None
    metrics: tuple[str, int] | None = None


class Child:
    """The supervisor's view of one child process."""

    def __init__(
        self, index: int, process: asyncio.subprocess.Process, *, replacement: bool = False
    ) -> None:
        self.index = index
        self.replacement = replacement
        self.process = process
        self.pid = process.pid
        self.started_at = time.monotonic()
        self.ready = False
        self.healthy = False
        self.last_beat = 0.0
        self.replacing: str | None = None

    def __str__(self) -> str:
        return f"child {self.index} (pid {self.pid})"

    def beating(self, now: float) -> bool:
        """Started, connected and heard from lately; or a planned replacement still starting."""
        if not self.ready:
            return self.replacement and now - self.started_at < REPLACEMENT_GRACE_S
        return self.healthy and now - self.last_beat < BEAT_STALE_S

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)


class Supervisor:
    """Runs ``options.processes`` children of ``options.target`` until a signal."""

    def __init__(self, options: SupervisorOptions) -> None:
        self.options = options
        self._slots: list[Child | None] = [None] * options.processes
        self._deaths = [0] * options.processes
        self._alive: set[Child] = set()
        self._followers: set[asyncio.Task[None]] = set()
        self._pending: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._signalled = False
        self._stopping = False
        self._ever_ready = False
        self._fatal: ExitCode | None = None
        self._fleet: FleetMetrics | None = None

    # -- health ---------------------------------------------------------------

    def healthy(self) -> bool:
        """True while every slot has a child that started, beats, and is connected."""
        if self._stopping:
            return False
        now = time.monotonic()
        return all(child is not None and child.beating(now) for child in self._slots)

    # -- the run ---------------------------------------------------------------

    async def serve(self) -> ExitCode:
        """Start the children, supervise them until a signal, stop them; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            with self._metrics():
                server = await serve_health(self.options.health, self.healthy)
                try:
                    for index in range(self.options.processes):
                        await self._start(index)
                    await self._stop.wait()
                    return await self._shutdown()
                finally:
                    if server is not None:
                        server.close()
                        await server.wait_closed()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._signalled:
            self._signalled = True
            logger.info(
                "%s received: stopping %d child process(es); running jobs get up to %gs "
                "(send it again to stop now)",
                name,
                len(self._alive),
                self.options.shutdown_timeout_s,
            )
            self._stop.set()
        elif not self._force.is_set():
            logger.warning("%s received again: stopping every child now", name)
            self._force.set()

    @contextlib.contextmanager
    def _metrics(self) -> Iterator[None]:
        """Serve every child's metrics, summed, on ``options.metrics`` (if set)."""
        if self.options.metrics is None:
            yield
            return
        with serve_fleet_metrics(*self.options.metrics) as metrics:
            self._fleet = metrics
            yield

    # -- children --------------------------------------------------------------

    def _spec(self, index: int, status_fd: int) -> ChildSpec:
        options = self.options
        return ChildSpec(
            target=options.target,
            index=index,
            status_fd=status_fd,
            shutdown_timeout_s=options.shutdown_timeout_s,
            log_level=options.log_level,
            log_format=options.log_format,
            overrides=options.overrides,
            metrics=self._fleet is not None,
            max_jobs=options.max_jobs,
            max_memory_bytes=options.max_memory_bytes,
        )

    async def _start(self, index: int, *, replacement: bool = False) -> None:
        """Start the child of slot ``index`` and follow its status and its exit."""
        ours, theirs = socket.socketpair()
        env = {**os.environ, CHILD_SPEC_ENV: self._spec(index, theirs.fileno()).to_env()}
        if self._fleet is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._fleet.directory
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "amqp_worker.cli",
                "_child",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=MAX_STATUS_BYTES)
        child = Child(index, process, replacement=replacement)
        self._slots[index] = child
        self._alive.add(child)
        logger.debug("%s starting", child)
        task = asyncio.create_task(self._follow(child, reader, writer))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(
        self, child: Child, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                status = read_status(line)
                if status is not None:
                    self._on_status(child, status)
        except (ValueError, ConnectionError):  # an overlong line; a reset
            pass
        try:
            returncode = await child.process.wait()
        finally:
            writer.close()
            self._alive.discard(child)
        self._exited(child, returncode)

    def _on_status(self, child: Child, status: dict[str, Any]) -> None:
        event = status["event"]
        if event == "started":
            child.ready = child.healthy = True
            child.last_beat = time.monotonic()
            self._ever_ready = True
            logger.info("%s started", child)
        elif event == "beat":
            child.healthy = status.get("healthy") is True
            child.last_beat = time.monotonic()
        elif event == "replace" and child.replacing is None:
            reason = str(status.get("reason", "limit"))
            child.replacing = reason
            logger.info("%s is being replaced: %s", child, status.get("detail", reason))
            if self._fleet is not None:
                self._fleet.restarted(reason)
            if self._slots[child.index] is child and not self._stopping:
                self._later(child.index, 0.0, replacement=True)

    def _exited(self, child: Child, returncode: int) -> None:
        if self._fleet is not None:
            self._fleet.exited(child.pid)
        how = describe_exit(returncode)
        if self._stopping or child.replacing is not None:
            logger.info("%s stopped (%s)", child, how)
            return
        if self._slots[child.index] is not child:
            return
        self._slots[child.index] = None
        lived_s = time.monotonic() - child.started_at
        if not child.ready and not self._ever_ready and returncode in _FATAL_AT_START:
            logger.error("%s could not start (%s): stopping", child, how)
            self._fatal = ExitCode(returncode)
            self._stop.set()
            return
        index = child.index
        self._deaths[index] = 1 if lived_s >= STABLE_AFTER_S else self._deaths[index] + 1
        delay_s = restart_delay_s(self._deaths[index])
        logger.warning(
            "%s died (%s) after %.1fs; starting another in %.1fs", child, how, lived_s, delay_s
        )
        if self._fleet is not None:
            self._fleet.restarted("died")
        self._later(index, delay_s)

    def _later(self, index: int, delay_s: float, *, replacement: bool = False) -> None:
        """Start slot ``index``'s next child after ``delay_s``, unless the daemon stops first."""

        async def start() -> None:
            await asyncio.sleep(delay_s)
            if self._stopping:
                return
            try:
                await self._start(index, replacement=replacement)
            except OSError as exc:  # out of processes or descriptors: try again, slower
                self._deaths[index] += 1
                retry_s = restart_delay_s(self._deaths[index])
                logger.error(
                    "cannot start child %d (%s); trying again in %.1fs", index, exc, retry_s
                )
                self._later(index, retry_s, replacement=replacement)

        task = asyncio.create_task(start())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    # -- stopping --------------------------------------------------------------

    async def _shutdown(self) -> ExitCode:
        self._stopping = True
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        children = list(self._alive)
        for child in children:
            child.signal(signal.SIGTERM)
        graceful_s = self.options.shutdown_timeout_s + FORCED_STOP_S + 5
        forced = await self._wait_for_children(graceful_s)
        if forced:
            for child in self._alive:
                child.signal(signal.SIGINT)  # their second signal: stop now
            await self._wait_for_children(FORCED_STOP_S + 3, watch_force=False)
        killed = list(self._alive)
        for child in killed:
            logger.error("%s did not stop in time: killing it", child)
            child.signal(signal.SIGKILL)
        await asyncio.gather(*self._followers, return_exceptions=True)
        if self._fatal is not None:
            return self._fatal
        clean = all(
            child.process.returncode in (0, -signal.SIGTERM)
            for child in children
            if child not in killed
        )
        if forced or killed or not clean:
            logger.warning("stopped; not every child stopped cleanly")
            return ExitCode.FAILURE
        logger.info("every child stopped")
        return ExitCode.OK

    async def _wait_for_children(self, timeout_s: float, *, watch_force: bool = True) -> bool:
        """Wait until every child has exited or ``timeout_s`` passed; True if forced meanwhile."""
        deadline = time.monotonic() + timeout_s
        while self._alive and time.monotonic() < deadline:
            if watch_force and self._force.is_set():
                return True
            await asyncio.sleep(0.05)
        return watch_force and self._force.is_set()
