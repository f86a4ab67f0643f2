"""``amqp-worker schedules``: each schedule, its last and next tick, and who leads."""

from __future__ import annotations

import asyncio
import json

import click

from amqp_worker._rabbitmq.inspection import QueueInspector
from amqp_worker._rabbitmq.schedule_status import ScheduleStatus

from .common import ExitCode, Target, connection_options, render_table

__all__ = ["schedules"]

HEADERS = ("SCHEDULE", "WHEN", "ZONE", "MISSED", "LAST TICK FIRED", "NEXT TICK")


def schedules_report(status: ScheduleStatus) -> str:
    """The table of a leader's status message."""
    rows = [
        (
            row.name,
            row.schedule,
            row.tz,
            row.missed,
            row.last_tick.isoformat() if row.last_tick else "-",
            row.next_tick.isoformat(),
        )
        for row in status.schedules
    ]
    head = f"leader: {status.leader} on {status.node or '?'} (as of {status.at.isoformat()})"
    return "\n".join([head, render_table(HEADERS, rows)])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the leader's status as JSON.")
@connection_options
def schedules(as_json: bool, target: Target) -> ExitCode:
    """The schedules of the workers called --name, as their leader last reported them.

    One replica at a time leads the schedules (see docs/periodic.md); after
    each tick it fires, it writes its view: each schedule's cron or interval,
    zone and missed= policy, the last tick fired, the next tick, and which
    connection leads. Exits 1 if no replica has led yet.
    """
    settings = target.settings()

    async def read() -> bytes | None:
        async with QueueInspector(settings) as inspector:
            return await inspector.peek(settings.topology.schedule_status_queue)

    body = asyncio.run(read())
    if body is None:
        click.echo(
            f"no schedule status on {settings.broker} for name={settings.name}: "
            "no worker with schedules has led yet",
            err=True,
        )
        return ExitCode.FAILURE
    try:
        status = ScheduleStatus.decode(body)
    except ValueError as exc:
        click.echo(f"unreadable schedule status on {settings.broker}: {exc}", err=True)
        return ExitCode.FAILURE
    click.echo(json.dumps(status.as_json(), indent=2) if as_json else schedules_report(status))
    return ExitCode.OK
