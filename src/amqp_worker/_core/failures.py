"""Failure records: why a job failed, on every attempt, and how that travels in headers.

Each failed attempt adds an :class:`AttemptRecord` to the job's history. The
history rides along with retries in the ``aw-history`` header (a list of
tables), and a parked job carries it all, so a failed job is always
explainable. A parked message also has:

=====================  ======================================================
``aw-failure-reason``  a :class:`FailureReason`
``aw-queue``           the job queue it came from
``aw-failed-at``       when it was parked (ISO 8601)
``aw-attempts``        how many attempts ran
``aw-error-type``      the last exception's qualified type
``aw-error-message``   its message (first 1 KiB)
``aw-traceback``       its traceback (last 8 KiB)
``aw-history``         one table per failed attempt, oldest first
=====================  ======================================================
"""

from __future__ import annotations

import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .job import Job, validate_name

__all__ = [
    "AttemptRecord",
    "FailedJob",
    "FailedJobsResult",
    "FailureReason",
    "failure_headers",
    "history_from_headers",
    "history_header",
]

REASON_HEADER = "aw-failure-reason"
HISTORY_HEADER = "aw-history"

#: Longest error message and traceback kept for the last attempt.
MAX_ERROR_CHARS = 1024
MAX_TRACEBACK_CHARS = 8192
#: Each earlier attempt keeps a shorter traceback, so the history fits in one AMQP frame.
MAX_HISTORY_TRACEBACK_CHARS = 1024
#: The history keeps this many most recent attempts (the count is kept in aw-attempts).
MAX_HISTORY = 25


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
    """The handler raised (or timed out) and will not be retried."""
    INVALID_RESULT = "invalid_result"
    """The handler succeeded, but its result (to keep or pass on) is not JSON or too large."""
    CRASHED = "crashed"
    """The job was handed out ``max_deliveries`` times and never finished: it kept
    killing the worker that ran it."""
    TOO_LARGE = "too_large"
    """The body is larger than the worker's ``max_message_bytes``; it was not decoded."""
    EXPIRED = "expired"
    """It was not started before its deadline (``expires_at``, or its handler's
    ``max_age_s``); its handler never ran."""
    CANCELLED = "cancelled"
    """It was cancelled (``worker.cancel``) before or while it ran."""
    DELIVERY_LIMIT = "delivery_limit"
    """RabbitMQ dead-lettered it from a quorum queue after ``x-delivery-limit``
    deliveries (the broker's safety net; amqp-worker's own limit comes first)."""


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # Keep the end of a traceback: the frame that raised is the useful part.
    return "...(truncated)...\n" + text[-limit:]


def error_type(exc: BaseException) -> str:
    """``module.QualName`` of an exception's type."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def format_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """The exception's traceback, keeping its last ``limit`` characters."""
    return _truncate("".join(traceback.format_exception(exc)), limit)


class AttemptRecord(BaseModel):
    """One failed attempt of a job."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    error_type: str
    error_message: str
    at: datetime
    traceback: str = ""

    @classmethod
    def of(cls, attempt: int, exc: BaseException, now: datetime | None = None) -> AttemptRecord:
        """The record of ``attempt`` failing with ``exc``."""
        return cls(
            attempt=attempt,
            error_type=error_type(exc),
            error_message=_truncate(str(exc), MAX_ERROR_CHARS),
            at=now or datetime.now(UTC),
            traceback=format_traceback(exc, MAX_HISTORY_TRACEBACK_CHARS),
        )


def history_header(history: Sequence[AttemptRecord]) -> list[dict[str, Any]]:
    """The ``aw-history`` header value: the most recent attempts, as AMQP tables."""
    return [
        {
            "attempt": r.attempt,
            "error_type": r.error_type,
            "error_message": r.error_message,
            "at": r.at.isoformat(),
            "traceback": r.traceback,
        }
        for r in list(history)[-MAX_HISTORY:]
    ]


def history_from_headers(headers: Mapping[str, Any] | None) -> list[AttemptRecord]:
    """The history a message carries; entries that don't parse are skipped, never fatal."""
    raw = (headers or {}).get(HISTORY_HEADER)
    if not isinstance(raw, list):
        return []
    records: list[AttemptRecord] = []
    for entry in raw:
        try:
            records.append(AttemptRecord.model_validate(entry))
        except ValidationError:
            continue
    return records


def failure_headers(
    reason: FailureReason,
    queue: str,
    exc: BaseException | None = None,
    *,
    history: Sequence[AttemptRecord] = (),
    now: datetime | None = None,
) -> dict[str, Any]:
    """Headers that explain why a message was parked: reason, last error, full history."""
    headers: dict[str, Any] = {
        REASON_HEADER: reason.value,
        "aw-queue": queue,
        "aw-failed-at": (now or datetime.now(UTC)).isoformat(),
        "aw-attempts": max(len(history), 1 if exc is not None else 0),
    }
    if exc is not None:
        headers["aw-error-type"] = error_type(exc)
        headers["aw-error-message"] = _truncate(str(exc), MAX_ERROR_CHARS)
        headers["aw-traceback"] = format_traceback(exc)
    if history:
        headers[HISTORY_HEADER] = history_header(history)
    return headers


def _reason(headers: Mapping[str, Any]) -> FailureReason:
    """Why a message is parked: our header, else RabbitMQ's dead-letter reason."""
    ours = headers.get(REASON_HEADER)
    if ours is None:
        deaths = headers.get("x-death")
        last = deaths[0] if isinstance(deaths, list) and deaths else None
        if isinstance(last, Mapping) and last.get("reason") == "delivery_limit":
            return FailureReason.DELIVERY_LIMIT
    try:
        return FailureReason(str(ours or "handler_error"))
    except ValueError:
        return FailureReason.HANDLER_ERROR


class FailedJob(BaseModel):
    """A parked job, as the failed-job tools show it."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64")

    id: str
    """The job id (the message id for bodies that are not jobs)."""
    queue: str
    reason: FailureReason
    failed_at: datetime | None
    attempts: int
    """How many attempts ran."""
    history: list[AttemptRecord]
    """Every failed attempt, oldest first."""
    job: Job | None
    """The job, or None if the body is not a valid job."""
    body: bytes
    """The message body exactly as parked."""
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""

    @property
    def handler(self) -> str | None:
        return self.job.handler if self.job else None

    @property
    def last_error(self) -> str:
        """``Type: message`` of the last failure, or the reason if there was no exception."""
        if not self.error_type:
            return self.reason.value
        return f"{self.error_type.rsplit('.', 1)[-1]}: {self.error_message}"

    @classmethod
    def from_message(
        cls, body: bytes, headers: Mapping[str, Any] | None, message_id: str | None, queue: str
    ) -> FailedJob:
        """Read a parked message back; never fails, whatever the body holds."""
        headers = headers or {}
        try:
            job: Job | None = Job.from_json(body)
        except ValidationError:
            job = None
        if job is not None and "id" not in job.model_fields_set:
            job = job.model_copy(update={"id": _parked_id(body, message_id)})
        reason = _reason(headers)
        try:
            failed_at = datetime.fromisoformat(str(headers["aw-failed-at"]))
        except (KeyError, ValueError):
            failed_at = None
        attempts = headers.get("aw-attempts")
        return cls(
            id=job.id if job else (message_id or ""),
            queue=str(headers.get("aw-queue", queue)),
            reason=reason,
            failed_at=failed_at,
            attempts=attempts if isinstance(attempts, int) else 0,
            history=history_from_headers(headers),
            job=job,
            body=body,
            error_type=str(headers.get("aw-error-type", "")),
            error_message=str(headers.get("aw-error-message", "")),
            traceback=str(headers.get("aw-traceback", "")),
        )


#: Ids of parked bodies that name none, and came without a usable message id either.
_BODY_IDS = uuid.UUID("3b9d8a53-3f0c-4d8e-9a51-6f0b7b0c2f11")


def _parked_id(body: bytes, message_id: str | None) -> str:
    """The id of a parked job whose body has none: the same on every read.

    A publisher may leave ``id`` out; decoding then makes up a new one each
    time, so the failed-job tools would show another id on every listing and
    never find one by it. The worker parks such a job with the id it ran
    under (in its logs and hooks) as the message id, so that is its id; a
    body parked by anything else gets one derived from its bytes.
    """
    if message_id:
        try:
            return validate_name(message_id)
        except ValueError:
            pass
    return str(uuid.uuid5(_BODY_IDS, body.decode("latin-1")))


@dataclass(frozen=True, slots=True)
class FailedJobsResult:
    """What a bulk ``retry`` or ``purge`` of failed jobs did, by job id."""

    done: tuple[str, ...] = ()
    """Ids retried (back on their work queue, confirmed) or purged, in queue order."""
    not_found: tuple[str, ...] = ()
    """Ids asked for that no failed-jobs queue holds (already retried or purged, or a typo)."""
    skipped: tuple[str, ...] = ()
    """Ids left in place: parked bodies that are not valid jobs cannot be retried."""

    def __len__(self) -> int:
        return len(self.done)

    @classmethod
    def of(
        cls, wanted: Sequence[str] | None, done: Sequence[str], skipped: Sequence[str] = ()
    ) -> FailedJobsResult:
        """The result of acting on ``wanted`` ids (None: all): the ones not seen are not found."""
        seen = {*done, *skipped}
        missing = () if wanted is None else tuple(i for i in wanted if i not in seen)
        return cls(tuple(done), missing, tuple(skipped))
