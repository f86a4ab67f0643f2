"""``amqp-worker groups GROUP_ID``: where a group stands, and which members were parked."""

from __future__ import annotations

import asyncio
import json

import click

from amqp_worker._core.groups import GroupStatus

from .common import CLIError, ExitCode, Target, connection_options, render_table

__all__ = ["groups"]

HEADERS = ("INDEX", "JOB ID", "REASON")


def group_report(status: GroupStatus) -> str:
    """The text report: state, counts, and a table of the parked members."""
    lines = [
        f"group {status.id}: {status.state}",
        f"succeeded: {status.succeeded}/{status.size}",
        f"pending: {status.pending}",
        f"parked: {len(status.parked)}",
    ]
    if status.parked:
        rows = [(member.index, member.job_id, member.reason) for member in status.parked]
        lines.append(render_table(HEADERS, rows))
    return "\n".join(lines)


@click.command()
@click.argument("group_id")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@connection_options
def groups(group_id: str, as_json: bool, target: Target) -> ExitCode:
    """Where the group GROUP_ID stands: open, failed, finished or unknown.

    Prints how many members succeeded out of the group's size and the
    members that were parked, with their reasons (retry them with `failed
    retry`). Reading an open group that is complete lets its callback go, as
    any member's check would. Exits 0 for an open or finished group, 1 for a
    failed one (parked members hold its callback back) or an unknown id
    (never opened, or finished longer ago than result_ttl_s).
    """
    worker = target.worker()

    async def read() -> GroupStatus:
        try:
            return await worker.group_status(group_id)
        finally:
            await worker.stop()

    status = asyncio.run(read())
    if status.state == "unknown" and not as_json:
        raise CLIError(
            f"no group {group_id} on {worker.settings.broker} for name={worker.settings.name}: "
            "never opened, or finished longer ago than result_ttl_s",
            ExitCode.FAILURE,
        )
    if as_json:
        data = status.model_dump(mode="json")
        data["pending"] = status.pending
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(group_report(status))
    return ExitCode.OK if status.state in ("open", "finished") else ExitCode.FAILURE
