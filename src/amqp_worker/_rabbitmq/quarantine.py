"""Crash loops: jobs that come back unfinished run one at a time, and are parked if they keep killing workers.

A job whose handler kills the worker process (``os._exit``, a segfault, the
OOM killer) is redelivered by RabbitMQ, and would take every worker down in
turn. But a worker's death also redelivers every other job it held unacked,
so "was redelivered" alone does not name the culprit.

So a redelivered job is not run where it arrived. Its ``aw-deliveries``
count goes up by one and it moves (re-published, confirmed, then acked) to
its queue's *quarantine* queue. Every worker consumes the quarantine queue
with a prefetch of one: it holds at most one quarantined job at a time, so
when a quarantined job kills its worker again, it is the only quarantined job
that comes back, and only its count goes up. Innocent jobs that were
prefetched beside a poison one enter quarantine with a count of one, run
there, and finish. A job whose count reaches ``max_deliveries`` is parked with
reason ``crashed``, never dropped.

Jobs that are never redelivered pay one boolean test. This works the same on
classic and quorum queues: it needs no broker-side delivery count.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from amqp_worker._core.job import Job
from amqp_worker.errors import JobCrashed

from .messages import DELIVERIES_HEADER

__all__ = ["Verdict", "VerdictKind", "crash_error", "deliveries", "verdict"]


class VerdictKind(enum.Enum):
    """What to do with a delivery before running it."""

    RUN = "run"
    """A first delivery: run it here."""
    QUARANTINE = "quarantine"
    """It came back unfinished: move it to the quarantine queue with its new count."""
    PARK = "park"
    """It came back unfinished ``max_deliveries`` times: park it as crashed."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A :class:`VerdictKind` and the job's ``aw-deliveries`` count to carry on."""

    kind: VerdictKind
    deliveries: int


def deliveries(headers: Mapping[str, Any] | None) -> int:
    """The ``aw-deliveries`` count a message carries (0 if none or not a count)."""
    value = (headers or {}).get(DELIVERIES_HEADER)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def verdict(redelivered: bool, headers: Mapping[str, Any] | None, max_deliveries: int) -> Verdict:
    """Decide about a delivery: run it, quarantine it, or park it as crashed."""
    count = deliveries(headers)
    if not redelivered:
        return Verdict(VerdictKind.RUN, count)
    count += 1
    kind = VerdictKind.PARK if count >= max_deliveries else VerdictKind.QUARANTINE
    return Verdict(kind, count)


def crash_error(job: Job, deliveries: int, max_deliveries: int) -> JobCrashed:
    """The error a crashed job is parked with: what happened, and which handler did it."""
    return JobCrashed(
        f"job {job.id} was handed out {deliveries} times without finishing "
        f"(max_deliveries={max_deliveries}): its handler {job.handler!r} "
        "keeps killing the worker that runs it"
    )
