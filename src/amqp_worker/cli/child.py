"""One child process of ``amqp-worker run --processes``: the hidden ``_child`` command.

The supervisor starts ``python -m amqp_worker.cli _child`` with a
:class:`~.supervision.ChildSpec` in its environment. The child loads the
worker exactly as ``run`` did, opens its own connection, and runs one
:class:`~.daemon.Daemon`. On the socket its supervisor handed it, it reports
``started``, then a beat every second (healthy or not, jobs done, resident
memory). It asks to be replaced, and stops taking jobs, when it has finished
``max_jobs`` jobs or its resident memory passes ``max_memory_bytes``. When
the supervisor is gone (end of file on that socket) it stops gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket

import click

from amqp_worker._core.hooks import JobEvent
from amqp_worker._rabbitmq.worker import AMQPWorker

from . import logs
from .common import CLIError, ExitCode, Secrets, Target
from .daemon import Daemon
from .loading import prepare
from .supervision import CHILD_SPEC_ENV, ChildSpec, status_line

__all__ = ["BEAT_S", "ChildRun", "child", "resident_bytes"]

logger = logging.getLogger("amqp_worker.cli")

#: How often a child tells its supervisor it is alive (and checks its memory).
BEAT_S = 1.0


def resident_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ChildRun:
    """Runs one worker for a supervisor: reports on it, and stops it at the spec's limits."""

    def __init__(self, spec: ChildSpec, worker: AMQPWorker) -> None:
        self.spec = spec
        self.daemon = Daemon(worker, spec.shutdown_timeout_s)
        self.jobs = 0
        self.replacing: str | None = None
        self._writer: asyncio.StreamWriter | None = None
        worker.hooks.after(self._finished)
        worker.hooks.on_failure(self._finished)

    def _finished(self, event: JobEvent) -> None:
        if isinstance(event.error, asyncio.CancelledError):
            return  # stopped, not finished: RabbitMQ redelivers it
        self.jobs += 1
        limit = self.spec.max_jobs
        if limit is not None and self.jobs >= limit:
            self._replace("max_jobs", f"{self.jobs} jobs done (--max-jobs-per-child {limit})")

    def _replace(self, reason: str, detail: str) -> None:
        """Ask the supervisor for a successor, and stop taking jobs (running ones finish)."""
        if self.replacing is not None:
            return
        self.replacing = reason
        logger.info("this process is being replaced: %s", detail)
        self._send(status_line("replace", reason=reason, detail=detail))
        self.daemon.stop_soon()

    def _send(self, line: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(line)

    async def serve(self) -> ExitCode:
        """Run the worker until a signal, a limit or the supervisor's end; the exit code."""
        sock = socket.socket(fileno=self.spec.status_fd)
        reader, self._writer = await asyncio.open_connection(sock=sock)
        helpers = [
            asyncio.create_task(self._watch_supervisor(reader)),
            asyncio.create_task(self._beat()),
        ]
        try:
            return await self.daemon.serve()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self._writer.close()

    async def _watch_supervisor(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()  # the supervisor writes nothing: this returns at its end
        logger.warning("the supervisor is gone: stopping")
        self.daemon.stop_soon()

    async def _beat(self) -> None:
        await self.daemon.started.wait()
        self._send(status_line("started"))
        limit = self.spec.max_memory_bytes
        while True:
            rss = resident_bytes()
            self._send(status_line("beat", healthy=self.daemon.healthy(), jobs=self.jobs, rss=rss))
            if limit is not None and rss > limit:
                self._replace(
                    "max_memory",
                    f"resident memory {rss / 2**20:.0f} MiB is over "
                    f"--max-memory-per-child {limit / 2**20:.0f} MiB",
                )
            await asyncio.sleep(BEAT_S)


@click.command("_child", hidden=True)
def child() -> ExitCode:
    """A worker process of `amqp-worker run --processes`; not for running by hand."""
    raw = os.environ.get(CHILD_SPEC_ENV)
    if raw is None:
        raise CLIError(
            "_child is started by `amqp-worker run --processes N`, not by hand", ExitCode.CONFIG
        )
    try:
        spec = ChildSpec.from_env(raw)
    except ValueError as exc:
        raise CLIError(str(exc), ExitCode.CONFIG) from None
    log_format: logs.LogFormat = "json" if spec.log_format == "json" else "text"
    logs.configure(spec.log_level, log_format, child=spec.index)
    secrets = click.get_current_context().ensure_object(Secrets)
    worker, _ = prepare(spec.target, Target(None, None, None, secrets=secrets), spec.overrides)
    if not isinstance(worker, AMQPWorker):
        raise CLIError(f"{spec.target} is not an AMQPWorker", ExitCode.CONFIG)
    if spec.metrics:
        from amqp_worker.metrics import PrometheusMetrics

        PrometheusMetrics().instrument(worker)
    return asyncio.run(ChildRun(spec, worker).serve())
