"""Jobs to AMQP messages and back: properties and headers.

A job message is the job's JSON body (``docs/job.schema.json``) with these
properties: ``content_type=application/json``, ``delivery_mode=2``
(persistent), ``message_id=job.id``, ``type=job.handler`` and ``timestamp``.
Headers set by amqp-worker all start with ``aw-``:

- ``aw-attempt``: the job's attempt, for tools that don't parse bodies;
- ``aw-due-ms``: for delayed jobs, the due time in ms since the Unix epoch,
  by the publisher's clock;
- ``aw-delay-<level>``: the route through the delay topology;
- ``aw-dropped-headers``: on a re-published message, the names of headers it
  had to leave behind because this client cannot encode them;
- ``aw-deliveries``: on a job that came back unfinished (its worker died), how
  many times that happened (see :mod:`amqp_worker._rabbitmq.quarantine`);
- on retried and parked jobs, the failure record (see :mod:`amqp_worker._core.failures`).

RabbitMQ's own ``x-death`` / ``x-first-death-*`` / ``x-last-death-*`` headers
are stripped whenever amqp-worker re-publishes a message: RabbitMQ's
dead-letter cycle detection may otherwise silently drop it.

Re-published messages (a retry, a parked job, a job sent round the delay
topology again, a failed job retried by hand) all keep their headers through
one filter, :func:`carried_headers`; this module also builds them.

Receiving works the other way round: RabbitMQ relays properties and headers
unchecked; :mod:`amqp_worker._rabbitmq.lenient_decode` lets the AMQP client read those
another client wrote that it would choke on.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from aio_pika import DeliveryMode, Message
from aiormq import spec
from pamqp import encode

from amqp_worker._core.controls import DUE_HEADER
from amqp_worker._core.failures import (
    HISTORY_HEADER,
    AttemptRecord,
    FailureReason,
    failure_headers,
    history_header,
)
from amqp_worker._core.job import Job, check_size

from .frames import encode_job_properties

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERIES_HEADER",
    "DUE_HEADER",
    "JobMessage",
    "carried_headers",
    "job_message",
    "parked_message",
    "republish_headers",
    "retry_headers",
    "strip_death_headers",
]

ATTEMPT_HEADER = "aw-attempt"
DELAY_HEADER_PREFIX = "aw-delay-"
DELIVERIES_HEADER = "aw-deliveries"
#: Names of headers a re-published message had to leave behind (not encodable).
DROPPED_HEADER = "aw-dropped-headers"
MAX_DROPPED = 32
MAX_DROPPED_NAME = 128
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
    publish back), at any depth of tables and arrays, are decoded as UTF-8,
    with undecodable bytes replaced.
    """
    return {key: _decoded(value) for key, value in strip_death_headers(headers).items()}


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {key: _decoded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_decoded(item) for item in value]
    return value


#: What the AMQP client raises when it cannot encode a value of a message.
ENCODE_ERRORS: tuple[type[Exception], ...] = (TypeError, ValueError, OverflowError, struct.error)


def plain_copy(message: Message) -> Message:
    """``message`` with only what surely encodes: its body, encodable headers, a bounded id."""
    headers, _ = split_encodable(dict(message.headers or {}))
    message_id = message.message_id
    return Message(
        message.body,
        headers=headers,
        content_type=CONTENT_TYPE if message.content_type == CONTENT_TYPE else None,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message_id if message_id and len(message_id.encode()) <= 255 else None,
    )


def split_encodable(headers: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The headers the AMQP client can encode, and the names of those it cannot.

    Other clients send values this one cannot write back: an integer beyond
    64 bits, a 64-bit float beyond a 32-bit one's range (the client writes
    floats as 32-bit). A message that carried them must still be re-published
    (retried, parked), so those headers are left behind, by name.
    """
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in headers.items():
        try:
            encode.field_table({key: value})
        except ENCODE_ERRORS:
            dropped.append(str(key)[:MAX_DROPPED_NAME])
            continue
        kept[key] = value
    return kept, dropped


def carried_headers(
    headers: Mapping[str, Any] | None, *, fresh_start: bool = False
) -> dict[str, Any]:
    """The headers a re-published job keeps: the user's, and its failure record.

    Always dropped: RabbitMQ's death bookkeeping, the old route through the
    delay topology, the old due time and attempt (the new message gets its
    own). With ``fresh_start`` (a parked job retried by hand, which starts
    again at attempt 0) every ``aw-*`` header is dropped too: its failure
    record belongs to the run that ended. The user's headers (trace context,
    ``on_publish`` hooks) always travel on.
    """
    carried, dropped = split_encodable(
        {
            key: value
            for key, value in republish_headers(headers).items()
            if not (
                key.startswith("aw-")
                and (fresh_start or key.startswith(DELAY_HEADER_PREFIX) or key in _REPLACED)
            )
        }
    )
    if dropped:
        # Say what was left behind: it shows in the failure record of a parked job.
        earlier = carried.get(DROPPED_HEADER)
        names = [*(earlier if isinstance(earlier, list) else []), *dropped]
        carried[DROPPED_HEADER] = [str(name) for name in dict.fromkeys(names)][:MAX_DROPPED]
    return carried


#: Headers every new message of a job sets afresh.
_REPLACED = frozenset({ATTEMPT_HEADER, DUE_HEADER})


def retry_headers(
    headers: Mapping[str, Any] | None, history: Sequence[AttemptRecord]
) -> dict[str, Any]:
    """Headers of the next attempt of a job: its carried headers plus the failure history."""
    return {**carried_headers(headers), HISTORY_HEADER: history_header(history)}


class Received(Protocol):
    """A message as received: what a parked copy keeps of it."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...


def parked_message(
    message: Received,
    queue: str,
    reason: FailureReason,
    error: BaseException,
    *,
    job: Job | None = None,
    history: Sequence[AttemptRecord] = (),
) -> Message:
    """The failed-jobs copy of ``message``: its body untouched, the reason in its headers.

    The body stays exactly as received, so a body that is not even a job can
    still be read back and explained.
    """
    return Message(
        message.body,
        headers={
            **carried_headers(message.headers),
            **failure_headers(reason, queue, error, history=history),
        },
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=job.id if job else message.message_id,
        type=message.type,
        timestamp=message.timestamp,
    )


class JobMessage:
    """A job's message, ready to publish: its body and its properties, encoded once.

    The publish path writes ``body`` and ``encoded`` (the properties as they
    go on the wire, :mod:`amqp_worker._rabbitmq.frames`) without building
    them again; ``properties`` gives them back as the AMQP client's object.
    """

    __slots__ = (
        "body",
        "encoded",
        "headers",
        "message_id",
        "message_type",
        "priority",
        "timestamp",
    )

    def __init__(
        self,
        body: bytes,
        message_id: str,
        message_type: str,
        timestamp: datetime,
        headers: dict[str, Any],
        priority: int | None = None,
    ) -> None:
        self.body = body
        self.message_id = message_id
        self.message_type = message_type
        self.timestamp = timestamp
        self.headers = headers
        """The message's headers."""
        self.priority = priority
        """The AMQP priority (``Job.priority``); None: unset, which RabbitMQ reads as 0."""
        self.encoded = encode_job_properties(
            CONTENT_TYPE, headers, message_id, timestamp, message_type, priority
        )

    @property
    def properties(self) -> spec.Basic.Properties:
        """The properties as the AMQP client's object (persistent, JSON, the job's id and handler)."""
        return spec.Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT.value,
            message_id=self.message_id,
            message_type=self.message_type,
            timestamp=self.timestamp,
            headers=self.headers,
            priority=self.priority,
        )


def job_message(
    job: Job,
    *,
    headers: Mapping[str, Any] | None = None,
    due_ms: int | None = None,
    max_bytes: int | None = None,
) -> JobMessage:
    """The persistent AMQP message that carries ``job``.

    With ``max_bytes``, a body over it raises :class:`~amqp_worker.errors.JobTooLarge`.
    A header value the AMQP client cannot encode raises its ``TypeError`` (or
    ``ValueError``, ``struct.error``) here, before anything is published.
    """
    all_headers: dict[str, Any] = {ATTEMPT_HEADER: job.attempt}
    if due_ms is not None:
        all_headers[DUE_HEADER] = due_ms
    if headers:
        all_headers.update(headers)
    body = job.to_json()
    if max_bytes is not None:
        check_size(job.id, len(body), max_bytes)
    return JobMessage(body, job.id, job.handler, job.enqueued_at, all_headers, job.priority)
