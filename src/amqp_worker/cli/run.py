"""``amqp-worker run module:attr``: the worker daemon, in one process or several.

One process (the default) runs the worker in this process (:class:`~.daemon.Daemon`).
``--processes N``, ``--max-jobs-per-child`` or ``--max-memory-per-child``
start a supervisor (:class:`~.supervisor.Supervisor`) that runs the worker in
N child processes instead, each with its own connection. The worker is loaded
here first either way, so a bad ``module:attr`` or setting fails at once with
its exit code, before any process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import click

from amqp_worker._core.defaults import DEFAULT_STOP_TIMEOUT_S
from amqp_worker._rabbitmq.worker import AMQPWorker

from . import logs
from .common import CLIError, ExitCode, Target, daemon_connection_options, queue_option
from .daemon import Daemon, banner
from .loading import prepare
from .metrics_endpoint import serve_metrics
from .supervision import MemorySize, ProcessCount
from .supervisor import Supervisor, SupervisorOptions

__all__ = ["run"]

F = TypeVar("F", bound=Callable[..., Any])


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
    help="Handlers running at once, per process. [default: the worker's max_concurrency]",
)
@click.option(
    "-p",
    "--processes",
    envvar="AMQP_WORKER_PROCESSES",
    show_envvar=True,
    type=ProcessCount(),
    default="1",
    show_default=True,
    help="Worker processes under one supervisor, each with its own connection; "
    "'auto': one per core. A child that dies is restarted.",
)
@click.option(
    "--max-jobs-per-child",
    envvar="AMQP_WORKER_MAX_JOBS_PER_CHILD",
    show_envvar=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="Replace a child process after it finished N jobs (it takes no new ones, lets "
    "its running ones finish, and exits). Off unless given.",
)
@click.option(
    "--max-memory-per-child",
    envvar="AMQP_WORKER_MAX_MEMORY_PER_CHILD",
    show_envvar=True,
    type=MemorySize(),
    metavar="SIZE",
    help="Replace a child process whose resident memory passes SIZE (512MiB, 1GiB; a "
    "bare number is MiB), checked every second, the same graceful way. Off unless given.",
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
    processes: int,
    max_jobs_per_child: int | None,
    max_memory_per_child: int | None,
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

    With --processes N (or a --max-*-per-child limit) a supervisor runs the
    worker in N child processes and serves one health and one metrics
    endpoint for all of them; see docs/cli.md.
    """
    logs.configure(log_level, log_format)
    overrides: dict[str, Any] = {
        "url": target.url,
        **target.options(),
        "queues": list(queues) or None,
        "prefetch": prefetch,
        "max_concurrency": concurrency,
    }
    worker, given = prepare(target_spec, target, overrides)
    if isinstance(worker, AMQPWorker):
        timeout_s = worker.settings.shutdown_timeout_s
    else:
        timeout_s = DEFAULT_STOP_TIMEOUT_S
    if shutdown_timeout is not None:
        timeout_s = shutdown_timeout
    health = (health_host, health_port) if health_port is not None else None
    metrics = (metrics_host, metrics_port) if metrics_port is not None else None
    supervised = processes > 1 or max_jobs_per_child or max_memory_per_child
    if supervised:
        if not isinstance(worker, AMQPWorker):
            raise CLIError(
                "--processes and --max-*-per-child need an AMQPWorker: each process of a "
                f"SimpleWorker would keep jobs of its own; {target_spec} is a SimpleWorker",
                ExitCode.CONFIG,
            )
        logs.emit(f"{banner(worker)} processes={processes}")
        options = SupervisorOptions(
            target=target_spec,
            overrides=given,
            processes=processes,
            shutdown_timeout_s=timeout_s,
            log_level=log_level,
            log_format=log_format,
            max_jobs=max_jobs_per_child,
            max_memory_bytes=max_memory_per_child,
            health=health,
            metrics=metrics,
        )
        return asyncio.run(Supervisor(options).serve())
    logs.emit(banner(worker))
    with contextlib.ExitStack() as stack:
        if metrics is not None:
            stack.enter_context(serve_metrics(worker, *metrics))
        return asyncio.run(Daemon(worker, timeout_s, health).serve())
