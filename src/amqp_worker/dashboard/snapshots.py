"""The dashboard's reads of the failed-jobs queues, reused for a few seconds.

Paging through a search would read every failed-jobs queue once per page;
instead a full read is reused for :data:`SNAPSHOT_TTL_S`, and the jobs a page
showed are kept as long, so opening one of them needs no read at all. An
action (retry, purge) forgets both: the next page reads again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from amqp_worker._core.failures import FailedJob
from amqp_worker._rabbitmq.failed_jobs import RabbitFailedJobs

__all__ = ["SNAPSHOT_TTL_S", "FailedReads"]

#: A full read of the failed queues is reused for this long (paging through a search).
SNAPSHOT_TTL_S = 5.0


class FailedReads:
    """The last full read of the failed-jobs queues, and the jobs the last page showed."""

    def __init__(self) -> None:
        self._snapshot: tuple[float, tuple[str, ...], list[FailedJob]] | None = None
        self._shown: tuple[float, dict[str, FailedJob]] = (0.0, {})

    def forget(self) -> None:
        """Drop both: after a change, the next page reads the queues again."""
        self._snapshot = None
        self._shown = (0.0, {})

    def _cached(self, failed: RabbitFailedJobs) -> list[FailedJob] | None:
        """The last full read of these queues, if younger than :data:`SNAPSHOT_TTL_S`."""
        snap = self._snapshot
        if snap and snap[1] == failed.queues and time.monotonic() - snap[0] < SNAPSHOT_TTL_S:
            return snap[2]
        return None

    async def all(self, failed: RabbitFailedJobs, fresh: bool = False) -> list[FailedJob]:
        """Every parked job of every queue; a read younger than :data:`SNAPSHOT_TTL_S` is reused."""
        cached = None if fresh else self._cached(failed)
        if cached is not None:
            return cached
        records = await failed.list()
        # Timed from the end of the read: a long read is reused as long as a short one.
        self._snapshot = (time.monotonic(), failed.queues, records)
        return records

    def remember(self, records: list[FailedJob]) -> None:
        """Keep the jobs a page showed, so opening one of them needs no read of the queue."""
        self._shown = (time.monotonic(), {record.id: record for record in records})

    async def find(
        self, failed: RabbitFailedJobs, job_id: str, queue: str | None
    ) -> FailedJob | None:
        def pick(records: Iterable[FailedJob]) -> FailedJob | None:
            return next((r for r in records if r.id == job_id and queue in (None, r.queue)), None)

        shown_at, shown = self._shown
        if time.monotonic() - shown_at < SNAPSHOT_TTL_S and (found := pick(shown.values())):
            return found
        cached = self._cached(failed)
        found = pick(cached if cached is not None else await self.all(failed))
        if found is None and cached is not None:
            # The reused read may be older than the job: read once more before saying no.
            found = pick(await self.all(failed, fresh=True))
        return found
