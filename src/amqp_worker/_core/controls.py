"""Fleet controls as pure rules: expiry at the start gate, and where a partitioned job goes.

Pure functions, shared by every worker (docs/controls.md):

- ``Job.expires_at``: an absolute deadline, for every attempt;
- a handler's ``max_age_s``: each attempt must start within ``max_age_s`` of
  when it became due: its enqueue, or the time a delayed job or a delayed
  retry was due (the ``aw-due-ms`` header, the publisher's clock).

A job past either is refused with :class:`~amqp_worker.errors.JobExpired`
before its handler (or any ``before`` hook) runs, and parked with reason
``expired``: never run, never dropped.

A job with a ``partition_key`` goes to partition :func:`partition_of` of its
queue: a stable hash any publisher can compute (CRC-32 of the key's UTF-8).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from amqp_worker.errors import JobExpired

from .job import Job

__all__ = [
    "DUE_HEADER",
    "WAITING_SINCE_HEADER",
    "check_max_age",
    "due_at",
    "expiry_error",
    "partition_of",
    "waiting_since_ms",
]

#: A delayed job's (or delayed retry's) due time, in ms since the Unix epoch.
DUE_HEADER = "aw-due-ms"
#: When a job snoozed over its key's rate first became due (ms since the epoch): its
#: max_age_s counts from there, not from the end of its last snooze.
WAITING_SINCE_HEADER = "aw-waiting-since-ms"


def check_max_age(max_age_s: float | None) -> float | None:
    """Validate a handler's ``max_age_s``: None, or a positive, finite number of seconds."""
    if max_age_s is None:
        return None
    if isinstance(max_age_s, bool) or not isinstance(max_age_s, int | float):
        raise TypeError(f"max_age_s must be a number of seconds, got {max_age_s!r}")
    if not (max_age_s > 0 and math.isfinite(max_age_s)):
        raise ValueError(f"max_age_s must be > 0 and finite, got {max_age_s!r}")
    return float(max_age_s)


def due_at(job: Job, headers: Mapping[str, Any]) -> datetime | None:
    """When this attempt of ``job`` became due; None if that is unknown.

    A snoozed attempt carries when it first became due
    (``aw-waiting-since-ms``); a delayed one its due time (``aw-due-ms``); a first attempt
    without one was due when it was enqueued. A retry enqueued at once carries
    neither: its due time is unknown (``enqueued_at`` is the first attempt's).
    """
    due_ms = headers.get(WAITING_SINCE_HEADER, headers.get(DUE_HEADER))
    if isinstance(due_ms, int) and not isinstance(due_ms, bool):
        try:
            return datetime.fromtimestamp(due_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None  # a header another client wrote: not a time, so no deadline from it
    return job.enqueued_at if job.attempt == 0 else None


def expiry_error(
    job: Job, headers: Mapping[str, Any], max_age_s: float | None, now: datetime
) -> JobExpired | None:
    """:class:`JobExpired` if ``job`` may no longer start at ``now``; None if it may."""
    if job.expires_at is not None and now > job.expires_at:
        late = (now - job.expires_at).total_seconds()
        return JobExpired(
            f"job {job.id} expired at {job.expires_at.isoformat()} ({late:.3f}s before it "
            "could start); its handler did not run"
        )
    if max_age_s is not None:
        due = due_at(job, headers)
        if due is not None and now - due > timedelta(seconds=max_age_s):
            age = (now - due).total_seconds()
            return JobExpired(
                f"job {job.id} waited {age:.3f}s since it was due, over its handler's "
                f"max_age_s={max_age_s:g}; its handler did not run"
            )
    return None


def waiting_since_ms(job: Job, headers: Mapping[str, Any]) -> int:
    """When this attempt of ``job`` became due, in ms since the epoch (now if unknown)."""
    due = due_at(job, headers)
    return int((due or datetime.now(UTC)).timestamp() * 1000)


def partition_of(partition_key: str, partitions: int) -> int:
    """The partition (0 to ``partitions - 1``) of ``partition_key``: CRC-32 of its UTF-8, modulo.

    Stable across processes, versions and languages (unlike Python's ``hash``),
    so a publisher in any language routes a key where a Python one would.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    return zlib.crc32(partition_key.encode("utf-8")) % partitions
