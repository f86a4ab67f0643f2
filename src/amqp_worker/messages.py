"""Jobs to AMQP messages and back: properties and headers.

A job message is the job's JSON body (``docs/job.schema.json``) with these
properties: ``content_type=application/json``, ``delivery_mode=2``
(persistent), ``message_id=job.id``, ``type=job.handler`` and ``timestamp``.
Headers set by amqp-worker all start with ``aw-``:

- ``aw-attempt``: the job's attempt, for tools that don't parse bodies;
- ``aw-due-ms``: for delayed jobs, the due time in ms since the Unix epoch,
  by the publisher's clock;
- ``aw-delay-<level>``: the route through the delay topology;
- on retried and parked jobs, the failure record (see :mod:`amqp_worker.failures`).

RabbitMQ's own ``x-death`` / ``x-first-death-*`` / ``x-last-death-*`` headers
are stripped whenever amqp-worker re-publishes a message: RabbitMQ's
dead-letter cycle detection may otherwise silently drop it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aio_pika import DeliveryMode, Message

from .job import Job

__all__ = [
    "ATTEMPT_HEADER",
    "DUE_HEADER",
    "job_message",
    "republish_headers",
    "strip_death_headers",
]

ATTEMPT_HEADER = "aw-attempt"
DUE_HEADER = "aw-due-ms"
CONTENT_TYPE = "application/json"


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
