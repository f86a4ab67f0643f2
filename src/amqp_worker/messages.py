"""Jobs to AMQP messages and back: properties, headers, and the failure record.

A job message is the job's JSON body (``docs/job.schema.json``) with these
properties: ``content_type=application/json``, ``delivery_mode=2``
(persistent), ``message_id=job.id``, ``type=job.handler`` and ``timestamp``.
Headers set by amqp-worker all start with ``aw-``:

- ``aw-attempt``: the job's attempt, for tools that don't parse bodies;
- ``aw-due-ms``: for delayed jobs, the due time in ms since the Unix epoch,
  by the publisher's clock;
- ``aw-delay-<level>``: the route through the delay topology;
- on a parked job: ``aw-failure-reason``, ``aw-error-type``,
  ``aw-error-message``, ``aw-traceback``, ``aw-failed-at`` and ``aw-queue``.

RabbitMQ's own ``x-death`` / ``x-first-death-*`` / ``x-last-death-*`` headers
are stripped whenever amqp-worker re-publishes a message: RabbitMQ's
dead-letter cycle detection may otherwise silently drop it.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aio_pika import DeliveryMode, Message

from .job import Job

__all__ = [
    "ATTEMPT_HEADER",
    "DUE_HEADER",
    "FailureReason",
    "failure_headers",
    "job_message",
    "republish_headers",
    "strip_death_headers",
]

ATTEMPT_HEADER = "aw-attempt"
DUE_HEADER = "aw-due-ms"
REASON_HEADER = "aw-failure-reason"
CONTENT_TYPE = "application/json"

#: Longest error message and traceback kept in a parked job's headers.
MAX_ERROR_CHARS = 1024
MAX_TRACEBACK_CHARS = 8192


class FailureReason(StrEnum):
    """Why a message was parked in a failed-jobs queue (the ``aw-failure-reason`` header)."""

    INVALID_JSON = "invalid_json"
    """The body is not UTF-8 JSON."""
    INVALID_JOB = "invalid_job"
    """The body is JSON but not a valid job."""
    INVALID_ARGS = "invalid_args"
    """The args do not fit the handler's args model."""
    UNKNOWN_HANDLER = "unknown_handler"
    """This worker has no handler of that name."""
    HANDLER_ERROR = "handler_error"
    """The handler raised."""


def strip_death_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``headers`` without RabbitMQ's dead-letter bookkeeping."""
    if not headers:
        return {}
    return {
        key: value
        for key, value in headers.items()
        if key != "x-death" and not key.startswith(("x-first-death-", "x-last-death-"))
    }


def republish_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers of a received message made safe to publish again.

    Death bookkeeping is stripped, and byte strings (which the client cannot
    publish back) are decoded as UTF-8, with undecodable bytes replaced.
    """
    return {
        key: value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else value
        for key, value in strip_death_headers(headers).items()
    }


def job_message(
    job: Job,
    *,
    headers: Mapping[str, Any] | None = None,
    due_ms: int | None = None,
) -> Message:
    """The persistent AMQP message that carries ``job``."""
    all_headers: dict[str, Any] = {ATTEMPT_HEADER: job.attempt}
    if due_ms is not None:
        all_headers[DUE_HEADER] = due_ms
    if headers:
        all_headers.update(headers)
    return Message(
        job.to_json(),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=job.id,
        type=job.handler,
        timestamp=job.enqueued_at,
        headers=all_headers,
    )


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Keep the end of a traceback: the frame that raised is the useful part.
    return "...(truncated)...\n" + text[-limit:]


def failure_headers(
    reason: FailureReason,
    queue: str,
    exc: BaseException | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Headers that explain why a message was parked: reason, error and truncated traceback."""
    headers: dict[str, Any] = {
        REASON_HEADER: reason.value,
        "aw-queue": queue,
        "aw-failed-at": (now or datetime.now(UTC)).isoformat(),
    }
    if exc is not None:
        headers["aw-error-type"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
        headers["aw-error-message"] = _truncate(str(exc), MAX_ERROR_CHARS)
        formatted = "".join(traceback.format_exception(exc))
        headers["aw-traceback"] = _truncate(formatted, MAX_TRACEBACK_CHARS)
    return headers
