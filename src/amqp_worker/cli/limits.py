"""``amqp-worker limits MODULE:ATTR``: each limited handler, its limits, jobs waiting, tokens."""

from __future__ import annotations

import asyncio

import click

from amqp_worker._rabbitmq.inspection import QueueInspector
from amqp_worker._rabbitmq.limit_status import LimitStatus, limit_statuses

from .common import ExitCode, render_table
from .loading import load_amqp_worker

__all__ = ["LIMITS_NEED", "limits", "limits_report"]

#: Why `limits` and the dashboard's --app need an AMQPWorker.
LIMITS_NEED = "fleet-wide limits live on RabbitMQ; name an AMQPWorker"

HEADERS = (
    "HANDLER",
    "RATE",
    "BURST",
    "CONCURRENCY",
    "PER KEY",
    "WAITING",
    "TOKENS",
    "WORKERS",
    "LEADER",
)


def _shown(value: int | None) -> str:
    return "-" if value is None else str(value)


def limits_report(statuses: list[LimitStatus]) -> str:
    """The table of ``statuses``; '-' where a queue does not exist (or the limit is unset)."""
    rows = [
        (
            status.handler,
            status.limits.rate or "-",
            _shown(status.limits.token_burst),
            _shown(status.limits.concurrency),
            status.limits.key_name or "-",
            _shown(status.waiting),
            _shown(status.tokens),
            _shown(status.consumers),
            "-" if status.leader is None else ("yes" if status.leader else "NONE"),
        )
        for status in statuses
    ]
    return render_table(HEADERS, rows)


@click.command()
@click.argument("target", metavar="MODULE:ATTR")
def limits(target: str) -> ExitCode:
    """The rate and concurrency limits of the worker MODULE:ATTR names, and what waits.

    Imports the module like `run` does and connects with the worker's own
    settings. PER KEY names what a per-key limit is keyed by (an args field,
    or a function). WAITING counts jobs in the handler's limit queues (over the
    worker's queues), TOKENS the rate tokens ready to take, WORKERS the
    workers consuming them, LEADER whether a worker writes the tokens (NONE:
    no worker of this name runs with this handler). Exits 1 if the worker
    has no limited handler. See docs/controls.md.
    """
    worker = load_amqp_worker(target, LIMITS_NEED)
    limited = worker.limits
    if not limited:
        click.echo(f"{target} has no handler with a rate or concurrency limit", err=True)
        return ExitCode.FAILURE
    settings = worker.settings

    async def read() -> list[LimitStatus]:
        async with QueueInspector(settings) as inspector:
            return await limit_statuses(inspector, settings, limited)

    statuses = asyncio.run(read())
    click.echo(f"{settings.broker} name={settings.name}\n{limits_report(statuses)}")
    return ExitCode.OK
