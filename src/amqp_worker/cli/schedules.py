"""``amqp-worker schedules``: each schedule, its last and next tick, and who leads."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from amqp_worker.probe import Probe

from .common import ExitCode, Target, connection_options, render_table

__all__ = ["schedules"]

HEADERS = ("SCHEDULE", "WHEN", "ZONE", "MISSED", "LAST TICK FIRED", "NEXT TICK")


def schedules_report(status: dict[str, Any]) -> str:
    """The table of a leader's status message."""
    rows = [
        (
            row["name"],
            row["schedule"],
            row["tz"],
            row["missed"],
            row["last_tick"] or "-",
            row["next_tick"],
        )
        for row in status.get("schedules", [])
    ]
    head = (
        f"leader: {status.get('leader', '?')} on {status.get('node', '?')} (as of {status['at']})"
    )
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
        async with Probe(settings) as probe:
            return await probe.peek(settings.topology.schedule_status_queue)

    body = asyncio.run(read())
    if body is None:
        click.echo(
            f"no schedule status on {settings.broker} for name={settings.name}: "
            "no worker with schedules has led yet",
            err=True,
        )
        return ExitCode.FAILURE
    status = json.loads(body)
    click.echo(json.dumps(status, indent=2) if as_json else schedules_report(status))
    return ExitCode.OK
