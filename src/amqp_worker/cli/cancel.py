"""``amqp-worker cancel JOB_ID...``: cancel jobs by id, on every worker (docs/controls.md#cancel)."""

from __future__ import annotations

import asyncio
import json

import click

from .common import CLIError, ExitCode, Target, connection_options

__all__ = ["cancel"]


@click.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--json", "as_json", is_flag=True, help="Print what was cancelled as JSON.")
@connection_options
def cancel(job_ids: tuple[str, ...], as_json: bool, target: Target) -> ExitCode:
    """Cancel the jobs JOB_ID... wherever they are: queued, delayed or running.

    One confirmed record per id goes to the cancellations stream. A queued or
    delayed job is parked as 'cancelled' when it reaches a worker, instead of
    running; a running one is interrupted (async handlers) or told through
    its 'cancelled' parameter (sync handlers), then parked as 'cancelled'.
    See them with `failed list`. An unknown or finished id is no error:
    nothing happens to it, and a job enqueued with it within cancel_ttl_s
    (7 days) is cancelled too. Exits 0 once every cancel is confirmed, 4 if
    the broker cannot be reached.
    """
    worker = target.worker()

    async def send() -> None:
        try:
            await worker.cancel(*job_ids)
        finally:
            await worker.stop()

    try:
        asyncio.run(send())
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc), ExitCode.CONFIG) from None
    settings = worker.settings
    if as_json:
        data = {
            "cancelled": list(job_ids),
            "stream": settings.topology.cancels_stream,
            "cancel_ttl_s": settings.cancel_ttl_s,
        }
        click.echo(json.dumps(data, indent=2))
    else:
        for job_id in job_ids:
            click.echo(f"cancelled {job_id}")
    return ExitCode.OK
