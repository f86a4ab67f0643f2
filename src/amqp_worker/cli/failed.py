"""``amqp-worker failed``: list, show, retry and purge parked jobs."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from amqp_worker._core.failures import FailedJob, FailureReason
from amqp_worker._rabbitmq.worker import AMQPWorker

from .common import (
    CLIError,
    ExitCode,
    Target,
    connection_options,
    queue_option,
    render_table,
    shorten,
)

__all__ = ["failed"]

T = TypeVar("T")

#: Width of the LAST ERROR column of ``failed list``.
ERROR_WIDTH = 60


def _with_worker(
    target: Target, queues: tuple[str, ...], action: Callable[[AMQPWorker], Awaitable[T]]
) -> T:
    worker = target.worker(queues)

    async def go() -> T:
        try:
            return await action(worker)
        finally:
            await worker.stop()

    return asyncio.run(go())


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _record_json(record: FailedJob) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    data["handler"] = record.handler
    return data


def _ids_or_all(ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if ids and all_:
        raise click.UsageError("give job ids or --all, not both")
    if not ids and not all_:
        raise click.UsageError("give one or more job ids, or --all")
    return None if all_ else list(dict.fromkeys(ids))


def _not_found(missing: list[str], queues: tuple[str, ...]) -> CLIError:
    where = ", ".join(queues)
    return CLIError(f"no failed job with id {', '.join(missing)} in {where}", ExitCode.FAILURE)


@click.group()
def failed() -> None:
    """Jobs parked in the failed-jobs queues: list, show, retry, purge."""


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for machines.")


@failed.command("list")
@queue_option("List the failed jobs of this job queue.")
@click.option("-n", "--limit", type=click.IntRange(min=1), metavar="N", help="Show at most N jobs.")
@click.option(
    "--reason",
    type=click.Choice([reason.value for reason in FailureReason]),
    help="Only the jobs parked for this reason (cancelled, expired, crashed...).",
)
@json_option
@connection_options
def list_(
    queues: tuple[str, ...], limit: int | None, reason: str | None, as_json: bool, target: Target
) -> ExitCode:
    """List parked jobs, oldest first; nothing is removed or reordered."""
    # With a reason, read them all: the first N of the queue may all have another one.
    records = _with_worker(target, queues, lambda w: w.failed.list(limit=None if reason else limit))
    if reason is not None:
        records = [record for record in records if record.reason.value == reason][:limit]
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=2))
        return ExitCode.OK
    if not records:
        click.echo("no failed jobs")
        return ExitCode.OK
    rows = [
        (
            r.id,
            r.handler or "-",
            r.queue,
            r.attempts,
            r.reason.value,
            shorten(r.last_error, ERROR_WIDTH),
            _time(r.failed_at),
        )
        for r in records
    ]
    click.echo(
        render_table(
            ("ID", "HANDLER", "QUEUE", "ATTEMPTS", "REASON", "LAST ERROR", "FAILED AT"), rows
        )
    )
    return ExitCode.OK


def _describe(record: FailedJob) -> str:
    lines = [
        f"id:        {record.id}",
        f"queue:     {record.queue}",
        f"handler:   {record.handler or '-'}",
        f"reason:    {record.reason.value}",
        f"failed at: {_time(record.failed_at)}",
        f"attempts:  {record.attempts}",
    ]
    if record.job is not None:
        job = json.dumps(record.job.model_dump(mode="json"), indent=2, ensure_ascii=False)
    else:
        job = record.body.decode("utf-8", errors="replace")
    lines += ["job:", textwrap.indent(job, "  ")]
    if record.history:
        lines.append("attempt history:")
        for i, attempt in enumerate(record.history, 1):
            lines.append(
                f"  attempt {attempt.attempt} at {_time(attempt.at)}: "
                f"{attempt.error_type}: {attempt.error_message}"
            )
            # The last attempt's full traceback follows below; don't print it twice.
            if attempt.traceback and not (i == len(record.history) and record.traceback):
                lines.append(textwrap.indent(attempt.traceback.rstrip(), "    "))
    if record.error_type:
        lines.append(f"last error: {record.error_type}: {record.error_message}")
    if record.traceback:
        lines += ["last traceback:", textwrap.indent(record.traceback.rstrip(), "  ")]
    return "\n".join(lines)


@failed.command()
@click.argument("job_id", metavar="ID")
@queue_option("Look in the failed jobs of this job queue.")
@json_option
@connection_options
def show(job_id: str, queues: tuple[str, ...], as_json: bool, target: Target) -> ExitCode:
    """Show one parked job: the job, why it failed, every attempt, the traceback."""
    record = _with_worker(target, queues, lambda w: w.failed.show(job_id))
    if as_json:
        click.echo(json.dumps(_record_json(record), indent=2))
    else:
        click.echo(_describe(record))
    return ExitCode.OK


all_option = click.option("--all", "all_", is_flag=True, help="Every parked job of the queues.")


@failed.command()
@click.argument("ids", nargs=-1, metavar="[ID]...")
@all_option
@queue_option("Retry failed jobs of this job queue.")
@connection_options
def retry(ids: tuple[str, ...], all_: bool, queues: tuple[str, ...], target: Target) -> ExitCode:
    """Put parked jobs back on their work queues, with attempt reset to 0.

    Each job is confirmed on its work queue before its failed copy is removed.
    Retrying an id twice is safe: the second time it is not found (exit 1).
    """
    wanted = _ids_or_all(ids, all_)

    result = _with_worker(target, queues, lambda w: w.failed.retry(wanted))
    for job_id in result.done:
        click.echo(f"retried {job_id}")
    for job_id in result.skipped:
        click.echo(f"skipped {job_id}: not a valid job, left in place")
    if wanted is None and not result.done:
        click.echo("no failed jobs to retry")
    if result.not_found:
        raise _not_found(list(result.not_found), target.settings(queues).queues)
    return ExitCode.OK


@failed.command()
@click.argument("ids", nargs=-1, metavar="[ID]...")
@all_option
@queue_option("Purge failed jobs of this job queue.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def purge(
    ids: tuple[str, ...], all_: bool, queues: tuple[str, ...], yes: bool, target: Target
) -> ExitCode:
    """Delete parked jobs for good. Asks first, unless --yes."""
    wanted = _ids_or_all(ids, all_)
    settings = target.settings(queues)
    where = ", ".join(settings.queues)
    if not yes:
        if not sys.stdin.isatty():
            raise CLIError(
                "refusing to purge without --yes: stdin is not a terminal to confirm on",
                ExitCode.FAILURE,
            )
        what = f"every failed job of {where}" if wanted is None else f"{len(wanted)} failed job(s)"
        if not click.confirm(f"Delete {what}? This cannot be undone", default=False):
            click.echo("nothing deleted")
            return ExitCode.FAILURE

    result = _with_worker(target, queues, lambda w: w.failed.purge(wanted))
    if wanted is not None:
        for job_id in result.done:
            click.echo(f"deleted {job_id}")
    click.echo(f"deleted {len(result.done)} failed job(s) of {where}")
    if result.not_found:
        raise _not_found(list(result.not_found), settings.queues)
    return ExitCode.OK
