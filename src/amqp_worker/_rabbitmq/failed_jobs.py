"""Failed-job operations on RabbitMQ: list, show, retry and purge parked jobs.

Reading never loses or reorders anything: see :mod:`amqp_worker._rabbitmq.inspection`.

Retrying publishes the job to its work queue with ``attempt`` reset to 0,
waits for the broker's confirm, and only then acks (removes) the failed copy.
A crash in between leaves a duplicate, never a loss, and running the same
retry twice finds the job gone the second time.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from amqp_worker._core.failed_jobs import first_with_id, wanted_ids
from amqp_worker._core.failures import FailedJob, FailedJobsResult
from amqp_worker._core.job import Job
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.inspection import browse
from amqp_worker._rabbitmq.messages import carried_headers, job_message

__all__ = ["RabbitFailedJobs"]

logger = logging.getLogger("amqp_worker")

#: What ``visit`` does with each message: True acks (removes) it, False leaves it.
Visitor = Callable[[FailedJob, AbstractIncomingMessage], Awaitable[bool]]


class RabbitFailedJobs:
    """The failed-jobs queues of some work queues, on one broker (an :class:`~amqp_worker.FailedJobs`)."""

    def __init__(self, broker: Broker, queues: Sequence[str]) -> None:
        self._broker = broker
        self.queues = tuple(queues)
        """The job queues whose failed jobs this covers when no ``queue`` is given."""

    def __repr__(self) -> str:
        return f"<RabbitFailedJobs {self._broker.settings.broker} queues={list(self.queues)!r}>"

    def _queues(self, queue: str | None) -> tuple[str, ...]:
        return (queue,) if queue is not None else self.queues

    async def _visit(self, queue: str, visitor: Visitor, limit: int | None = None) -> int:
        """Show each message of ``queue``'s failed-jobs queue to ``visitor``, in order, once.

        A queue that does not exist (nothing was ever parked there, or a typo
        in ``--queue``) reads as empty and is not created.
        """

        async def visit(message: AbstractIncomingMessage) -> bool:
            record = FailedJob.from_message(
                message.body, message.headers, message.message_id, queue
            )
            return await visitor(record, message)

        seen = await browse(
            self._broker.channel, self._broker.topology.failed_queue(queue), visit, limit
        )
        return seen or 0

    async def _visit_all(self, queue: str | None, visitor: Visitor) -> None:
        for name in self._queues(queue):
            await self._visit(name, visitor)

    async def list(
        self, queue: str | None = None, limit: int | None = None
    ) -> builtins.list[FailedJob]:
        """Parked jobs, oldest first, without removing or reordering any."""
        found: list[FailedJob] = []

        async def collect(record: FailedJob, _: AbstractIncomingMessage) -> bool:
            found.append(record)
            return False

        for name in self._queues(queue):
            remaining = None if limit is None else limit - len(found)
            if remaining is not None and remaining <= 0:
                break
            await self._visit(name, collect, remaining)
        return found

    async def show(self, job_id: str, queue: str | None = None) -> FailedJob:
        """One parked job by id; raises :class:`~amqp_worker.errors.FailedJobNotFound`."""
        return first_with_id(await self.list(queue), job_id, ", ".join(self._queues(queue)))

    async def retry(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Move parked jobs back to their work queues (``attempt`` reset); None moves all.

        One pass over each failed-jobs queue. Each job is confirmed on its
        work queue before its failed copy is removed.
        """
        wanted = wanted_ids(ids)
        chosen = None if wanted is None else set(wanted)
        moved: list[str] = []
        skipped: list[str] = []

        async def move(record: FailedJob, message: AbstractIncomingMessage) -> bool:
            if chosen is not None and record.id not in chosen:
                return False
            if record.job is None:
                logger.warning(
                    "failed message %s is not a valid job (%s); left in place",
                    record.id,
                    record.reason.value,
                )
                skipped.append(record.id)
                return False
            fresh: Job = record.job.model_copy(
                update={"attempt": 0, "enqueued_at": datetime.now(UTC)}
            )
            await self._broker.declarations.ensure_work_queue(fresh.queue)
            # The user's headers (trace context, on_publish hooks) travel on; the
            # failure bookkeeping and old route do not, nor x-death.
            headers = carried_headers(message.headers, fresh_start=True)
            await self._broker.publish(
                self._broker.topology.exchange, fresh.queue, job_message(fresh, headers=headers)
            )
            moved.append(record.id)
            return True

        await self._visit_all(queue, move)
        return FailedJobsResult.of(wanted, moved, skipped)

    async def purge(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> FailedJobsResult:
        """Delete parked jobs; None deletes all of the queues. One pass over each queue."""
        wanted = wanted_ids(ids)
        chosen = None if wanted is None else set(wanted)
        deleted: list[str] = []

        async def delete(record: FailedJob, _: AbstractIncomingMessage) -> bool:
            if chosen is not None and record.id not in chosen:
                return False
            deleted.append(record.id)
            return True

        await self._visit_all(queue, delete)
        return FailedJobsResult.of(wanted, deleted)
