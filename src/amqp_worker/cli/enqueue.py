"""``amqp-worker enqueue``: publish one job, now, after a delay, or at a time; print its id."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from pydantic import ValidationError

from amqp_worker._core.job import Job
from amqp_worker.errors import DuplicateJob, describe_validation_error

from .common import CLIError, ExitCode, Target, connection_options

__all__ = ["enqueue", "parse_args", "parse_duration", "parse_time"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``500ms``, ``5s``, ``2m``, ``1h``, ``1d``, ``1h30m`` or a bare ``90``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(
                f"{text!r} is not a duration; use e.g. 500ms, 5s, 2m, 1h, 1d or 1h30m"
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: it must be finite and not negative")
    return seconds


def parse_time(text: str) -> datetime:
    """An ISO 8601 date-time that has a UTC offset (or ``Z``)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date-time") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"{text!r} has no UTC offset, so it is ambiguous; "
            "add one, e.g. 2026-05-01T09:00:00+02:00 or ...Z"
        )
    return when


def parse_args(text: str) -> dict[str, Any]:
    """A JSON object."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _converter(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option callback that turns ``parse``'s ``ValueError`` into a usage error."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return convert


@click.command()
@click.option("-q", "--queue", required=True, metavar="QUEUE", help="The job's queue.")
@click.option("-H", "--handler", required=True, metavar="HANDLER", help="The handler to run.")
@click.option(
    "--args",
    "job_args",
    default="{}",
    callback=_converter(parse_args),
    metavar="JSON",
    help="The job args, a JSON object, e.g. '{\"user_id\": 1}'. [default: {}]",
)
@click.option(
    "--in",
    "delay",
    callback=_converter(parse_duration),
    metavar="DURATION",
    help="Run after this long: 500ms, 5s, 2m, 1h, 1d, 1h30m.",
)
@click.option(
    "--at",
    "when",
    callback=_converter(parse_time),
    metavar="TIME",
    help="Run at this ISO 8601 time, with an offset: 2026-05-01T09:00:00Z.",
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="Refuse the job (exit 1) while a job with this key is live (docs/controls.md).",
)
@click.option(
    "--unique-for",
    "unique_for_s",
    callback=_converter(parse_duration),
    metavar="DURATION",
    help="The longest the key is held, e.g. 10m. [default: the worker's unique_for_s]",
)
@connection_options
def enqueue(
    queue: str,
    handler: str,
    job_args: dict[str, Any],
    delay: float | None,
    when: datetime | None,
    unique_key: str | None,
    unique_for_s: float | None,
    target: Target,
) -> ExitCode:
    """Enqueue one job and print its id.

    It runs as soon as possible, or after --in, or at --at (a time in the past
    runs at once). The id is the only line on stdout, for scripts.
    """
    if delay is not None and when is not None:
        raise click.UsageError("give --in or --at, not both")
    if unique_for_s is not None and unique_key is None:
        raise click.UsageError("--unique-for needs --unique-key")
    fields: dict[str, Any] = {"unique_key": unique_key, "unique_for_s": unique_for_s}
    try:
        job = Job(queue=queue, handler=handler, args=job_args, **fields)
    except ValidationError as exc:
        raise CLIError(f"invalid job: {describe_validation_error(exc)}", ExitCode.CONFIG) from None
    worker = target.worker()

    async def publish() -> str:
        try:
            if when is not None:
                return await worker.perform_at(job, when)
            if delay:
                return await worker.perform_in(job, delay)
            return await worker.perform(job)
        finally:
            await worker.stop()

    try:
        click.echo(asyncio.run(publish()))
    except DuplicateJob as exc:
        raise CLIError(f"not enqueued: {exc}", ExitCode.FAILURE) from None
    return ExitCode.OK
