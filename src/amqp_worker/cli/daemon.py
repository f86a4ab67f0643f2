"""``amqp-worker run module:attr``: the worker daemon, stopped gracefully by SIGTERM or SIGINT.

The first signal stops taking jobs and gives running handlers the shutdown
timeout; a second one stops at once (running handlers are cancelled and their
jobs go back to RabbitMQ, which redelivers them) and exits with
:attr:`ExitCode.FAILURE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import click

from amqp_worker import __version__
from amqp_worker._core.defaults import DEFAULT_STOP_TIMEOUT_S
from amqp_worker._rabbitmq.worker import AMQPWorker

from . import logs
from .common import CLIError, ExitCode, Target, daemon_connection_options, queue_option
from .health import start_health_server
from .loading import AnyWorker, load_worker, rebuilt

__all__ = ["Daemon", "banner", "run"]

logger = logging.getLogger("amqp_worker.cli")

F = TypeVar("F", bound=Callable[..., Any])

#: How long a forced stop waits for the broker connection to close.
FORCED_STOP_S = 5.0

_OPTION_NAMES = {
    "url": "--url",
    "name": "--name",
    "queue_prefix": "--queue-prefix",
    "queues": "--queue",
    "prefetch": "--prefetch",
}


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
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    def healthy(self) -> bool:
        """True while the worker runs and, for RabbitMQ, its connection is open."""
        if not self.running:
            return False
        if not isinstance(self.worker, AMQPWorker):
            return True
        return self.worker.connected

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stop.is_set():
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
            if self.health is not None:
                host, port = self.health
                try:
                    server = await start_health_server(host, port, self.healthy)
                except OSError as exc:
                    raise CLIError(
                        f"cannot serve the health check on {host}:{port}: {exc.strerror or exc}",
                        ExitCode.CONFIG,
                    ) from None
            if not await self._start():
                return ExitCode.OK
            self.running = True
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


def _endpoint_options(kind: str, help_text: str) -> Callable[[F], F]:
    """``--KIND-port`` and ``--KIND-host`` options, also read from ``AMQP_WORKER_KIND_*``."""
    env = f"AMQP_WORKER_{kind.upper()}"
    port = click.option(
        f"--{kind}-port",
        envvar=f"{env}_PORT",
        show_envvar=True,
        type=click.IntRange(0, 65535),
        metavar="PORT",
        help=f"{help_text} Off unless given.",
    )
    host = click.option(
        f"--{kind}-host",
        envvar=f"{env}_HOST",
        show_envvar=True,
        default="0.0.0.0",
        show_default=True,
        metavar="HOST",
        help=f"Address the --{kind}-port endpoint listens on.",
    )
    return lambda func: port(host(func))


@click.command()
@click.argument("target_spec", metavar="MODULE:ATTR")
@queue_option("Consume this queue instead of the worker's queues.", default="the worker's queues")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Handlers running at once. [default: the worker's max_concurrency]",
)
@daemon_connection_options
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Unacked deliveries per consumer. [default: 2 x concurrency]",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long running jobs may finish after SIGTERM. [default: AMQP_WORKER_SHUTDOWN_TIMEOUT_S, or 30]",
)
@click.option(
    "--log-level",
    envvar="AMQP_WORKER_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    envvar="AMQP_WORKER_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one plain line per record; json: one JSON object per line.",
)
@_endpoint_options("health", "Serve GET /healthz: 200 while running and connected, else 503.")
@_endpoint_options(
    "metrics", "Serve Prometheus metrics on /metrics (needs amqp-worker[prometheus])."
)
def run(
    target_spec: str,
    queues: tuple[str, ...],
    concurrency: int | None,
    target: Target,
    prefetch: int | None,
    shutdown_timeout: float | None,
    log_level: str,
    log_format: logs.LogFormat,
    health_port: int | None,
    health_host: str,
    metrics_port: int | None,
    metrics_host: str,
) -> ExitCode:
    """Run the worker MODULE:ATTR until SIGTERM or SIGINT.

    ATTR is an AMQPWorker or SimpleWorker, or a zero-argument function that
    returns one, e.g. `amqp-worker run myapp.jobs:worker`. The current
    directory is importable, as with `python -m`. Options given here override
    the worker's settings; its handlers, hooks, retry policy and timeout are kept.
    """
    logs.configure(log_level, log_format)
    worker = load_worker(target_spec)
    if isinstance(worker, AMQPWorker):  # its URL came from its module, not from us
        target.secrets.add(worker.settings.url.get_secret_value())
    overrides: dict[str, Any] = {
        "url": target.url,
        **target.options(),
        "queues": list(queues) or None,
        "prefetch": prefetch,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if not isinstance(worker, AMQPWorker) and overrides:
        given = ", ".join(_OPTION_NAMES[key] for key in overrides)
        raise CLIError(
            f"{given} only apply to an AMQPWorker; {target_spec} is a SimpleWorker",
            ExitCode.CONFIG,
        )
    if concurrency is not None:
        overrides["max_concurrency"] = concurrency
    worker = rebuilt(worker, **overrides)
    if isinstance(worker, AMQPWorker):
        target.secrets.add(worker.settings.url.get_secret_value())
        timeout_s = worker.settings.shutdown_timeout_s
    else:
        timeout_s = DEFAULT_STOP_TIMEOUT_S
    if shutdown_timeout is not None:
        timeout_s = shutdown_timeout
    logs.emit(banner(worker))
    health = (health_host, health_port) if health_port is not None else None
    with contextlib.ExitStack() as stack:
        if metrics_port is not None:
            stack.enter_context(serve_metrics(worker, metrics_host, metrics_port))
        return asyncio.run(Daemon(worker, timeout_s, health).serve())


@contextlib.contextmanager
def serve_metrics(worker: AnyWorker, host: str, port: int) -> Iterator[None]:
    """Instrument ``worker`` and serve prometheus_client's default registry on ``host:port``.

    The default registry also carries the process and Python collectors.
    prometheus_client serves it from a thread of its own, shut down on exit.
    """
    try:
        from prometheus_client import start_http_server

        from amqp_worker.metrics import PrometheusMetrics
    except ImportError:
        raise CLIError(
            "--metrics-port needs the prometheus extra: pip install 'amqp-worker[prometheus]'",
            ExitCode.CONFIG,
        ) from None
    try:
        PrometheusMetrics().instrument(worker)
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
        raise CLIError(
            f"--metrics-port: the amqp_worker metrics are already registered ({exc}); "
            "the worker's module instruments itself, so serve its metrics there and "
            "drop --metrics-port",
            ExitCode.CONFIG,
        ) from None
    try:
        server, thread = start_http_server(port, host)
    except OSError as exc:
        raise CLIError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", ExitCode.CONFIG
        ) from None
    logger.info("serving Prometheus metrics on http://%s:%d/metrics", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
