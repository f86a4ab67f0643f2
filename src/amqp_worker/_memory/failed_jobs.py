"""Failed jobs kept in memory, for :class:`~amqp_worker.SimpleWorker`.

Like everything in the in-process worker, they live as long as the process.
They follow the same :class:`~amqp_worker.FailedJobs` contract as the
failed-jobs queues on RabbitMQ, including the headers a retried job carries
on (trace context, ``on_publish`` headers).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from amqp_worker._core.failed_jobs import first_with_id, wanted_ids
from amqp_worker._core.failures import FailedJob, FailedJobsResult
from amqp_worker._core.job import Job

__all__ = ["MemoryFailedJobs"]

#: Enqueues a retried job with the headers it carried when it was parked.
Requeue = Callable[[Job, dict[str, Any]], None]


class MemoryFailedJobs:
    """Parked jobs of one in-process worker, oldest first (an :class:`~amqp_worker.FailedJobs`)."""

    def __init__(self, requeue: Requeue) -> None:
        self._requeue = requeue
        self._parked: builtins.list[tuple[FailedJob, dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"<MemoryFailedJobs parked={len(self._parked)}>"

    def park(self, record: FailedJob, headers: Mapping[str, Any]) -> None:
        """Keep ``record``, with the message headers its job carried."""
        self._parked.append((record, dict(headers)))

    def _in(self, queue: str | None) -> builtins.list[tuple[FailedJob, dict[str, Any]]]:
        return [entry for entry in self._parked if queue is None or entry[0].queue == queue]

    async def list(
        self, queue: str | None = None, limit: int | None = None
    ) -> builtins.list[FailedJob]:
        """Parked jobs, oldest first; of ``queue`` only if given."""
        found = [record for record, _ in self._in(queue)]
        return found if limit is None else found[:limit]

    async def show(self, job_id: str, queue: str | None = None) -> FailedJob:
        """One parked job by id; raises :class:`~amqp_worker.errors.FailedJobNotFound`."""
        return first_with_id(await self.list(queue), job_id, queue or "any queue")

    async def retry(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Enqueue parked jobs again with ``attempt`` reset; None retries all."""
        wanted = wanted_ids(ids)
        moved: builtins.list[str] = []
        skipped: builtins.list[str] = []
        for entry in self._chosen(wanted, queue):
            record, headers = entry
            if record.job is None:
                skipped.append(record.id)
                continue
            self._parked.remove(entry)
            fresh = record.job.model_copy(update={"attempt": 0, "enqueued_at": datetime.now(UTC)})
            self._requeue(fresh, headers)
            moved.append(record.id)
        return FailedJobsResult.of(wanted, moved, skipped)

    async def purge(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Delete parked jobs; None deletes all (of ``queue``, if given)."""
        wanted = wanted_ids(ids)
        deleted: builtins.list[str] = []
        for entry in self._chosen(wanted, queue):
            self._parked.remove(entry)
            deleted.append(entry[0].id)
        return FailedJobsResult.of(wanted, deleted)

    def _chosen(
        self, wanted: builtins.list[str] | None, queue: str | None
    ) -> builtins.list[tuple[FailedJob, dict[str, Any]]]:
        entries = self._in(queue)
        if wanted is None:
            return entries
        chosen = set(wanted)
        return [entry for entry in entries if entry[0].id in chosen]
