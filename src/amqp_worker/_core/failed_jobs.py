"""What both failed-jobs implementations share: the ids asked for, and finding one.

Both follow :class:`amqp_worker.FailedJobs`:
:class:`~amqp_worker._rabbitmq.failed_jobs.RabbitFailedJobs` reads the
failed-jobs queues on RabbitMQ, and
:class:`~amqp_worker._memory.failed_jobs.MemoryFailedJobs` keeps the parked
jobs of a :class:`~amqp_worker.SimpleWorker` in memory. What a parked job
carries is in :mod:`amqp_worker._core.failures`.
"""

from __future__ import annotations

from collections.abc import Iterable

from amqp_worker._core.failures import FailedJob
from amqp_worker.errors import FailedJobNotFound

__all__ = ["first_with_id", "wanted_ids"]


def wanted_ids(ids: Iterable[str] | None) -> list[str] | None:
    """The ids asked for, each once, in order; None means every job."""
    if ids is None:
        return None
    if isinstance(ids, str):
        # A lone id is a str, itself an iterable of one-letter "ids": refuse, don't guess.
        raise TypeError("ids must be an iterable of job ids, not a str")
    return list(dict.fromkeys(ids))


def first_with_id(records: Iterable[FailedJob], job_id: str, where: str) -> FailedJob:
    """The first record of ``job_id``; :class:`FailedJobNotFound` naming ``where`` if none."""
    for record in records:
        if record.id == job_id:
            return record
    raise FailedJobNotFound(f"no failed job with id {job_id} in {where}")
