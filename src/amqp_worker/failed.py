"""Failed-job operations on RabbitMQ: list, show, retry and purge parked jobs.

Reading never loses or reorders anything: messages are taken with
``basic.get`` *without* acking, and the channel is closed when done, so
RabbitMQ puts every message it did not ack back where it was. (Consuming and
re-publishing would move them to the back of the queue, and a crash halfway
could duplicate them.)

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

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from .broker import Broker
from .errors import FailedJobNotFound
from .failures import FailedJob
from .job import Job
from .messages import job_message, republish_headers

__all__ = ["FailedJobs"]

logger = logging.getLogger("amqp_worker")

#: What ``visit`` does with each message: True acks (removes) it, False leaves it.
Visitor = Callable[[FailedJob, AbstractIncomingMessage], Awaitable[bool]]


class FailedJobs:
    """The failed-jobs queues of some work queues, on one broker."""

    def __init__(self, broker: Broker, queues: Sequence[str]) -> None:
        self.broker = broker
        self.queues = tuple(queues)

    def _queues(self, queue: str | None) -> tuple[str, ...]:
        return (queue,) if queue is not None else self.queues

    async def _open(self, queue: str) -> tuple[AbstractChannel, AbstractQueue] | None:
        """A fresh channel and ``queue``'s failed-jobs queue; None if that queue does not exist.

        Declared passively: reading (or a typo in ``--queue``) never creates queues.
        """
        channel: AbstractChannel = await self.broker.channel()
        try:
            failed = await channel.declare_queue(
                self.broker.topology.failed_queue(queue), passive=True
            )
        except amqp_errors.ChannelNotFoundEntity:
            # The broker closed this channel on the 404; nothing was ever parked here.
            await channel.close()
            return None
        except BaseException:
            await channel.close()
            raise
        return channel, failed

    async def _visit(self, queue: str, visitor: Visitor, limit: int | None = None) -> int:
        """Show each message of ``queue``'s failed-jobs queue to ``visitor``, in order."""
        opened = await self._open(queue)
        if opened is None:
            return 0
        channel, failed = opened
        seen = 0
        try:
            while limit is None or seen < limit:
                message = await failed.get(no_ack=False, fail=False)
                if message is None:
                    break
                seen += 1
                record = FailedJob.from_message(
                    message.body, message.headers, message.message_id, queue
                )
                if await visitor(record, message):
                    await message.ack()
        finally:
            # Closing the channel returns every unacked message to its place in the queue.
            await channel.close()
        return seen

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
        """One parked job by id; raises :class:`FailedJobNotFound`."""
        for record in await self.list(queue):
            if record.id == job_id:
                return record
        raise FailedJobNotFound(
            f"no failed job with id {job_id} in {', '.join(self._queues(queue))}"
        )

    async def retry(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> builtins.list[str]:
        """Move parked jobs back to their work queues (``attempt`` reset); None moves all.

        Each job is confirmed on its work queue before its failed copy is
        removed. Raises :class:`FailedJobNotFound` for ids not found, after
        moving the ones that were.
        """
        wanted = None if ids is None else set(ids)
        moved: list[str] = []

        async def move(record: FailedJob, message: AbstractIncomingMessage) -> bool:
            if wanted is not None and record.id not in wanted:
                return False
            if record.job is None:
                logger.warning(
                    "failed message %s is not a valid job (%s); left in place",
                    record.id,
                    record.reason.value,
                )
                return False
            fresh: Job = record.job.model_copy(
                update={"attempt": 0, "enqueued_at": datetime.now(UTC)}
            )
            await self.broker.ensure_work_queue(fresh.queue)
            # The user's headers (trace context, on_publish hooks) travel on; the
            # failure bookkeeping and old route do not (aw-*), nor x-death.
            carried = {
                key: value
                for key, value in republish_headers(message.headers).items()
                if not key.startswith("aw-")
            }
            await self.broker.publish(
                self.broker.topology.exchange, fresh.queue, job_message(fresh, headers=carried)
            )
            moved.append(record.id)
            return True

        for name in self._queues(queue):
            await self._visit(name, move)
        _raise_missing(wanted, moved)
        return moved

    async def purge(self, ids: Iterable[str] | None = None, queue: str | None = None) -> int:
        """Delete parked jobs; None deletes all of the queues. Return how many."""
        if ids is None:
            total = 0
            for name in self._queues(queue):
                opened = await self._open(name)
                if opened is None:
                    continue
                channel, failed = opened
                try:
                    result = await failed.purge()
                    total += result.message_count or 0
                finally:
                    await channel.close()
            return total
        wanted = set(ids)
        deleted: list[str] = []

        async def delete(record: FailedJob, _: AbstractIncomingMessage) -> bool:
            if record.id in wanted:
                deleted.append(record.id)
                return True
            return False

        for name in self._queues(queue):
            await self._visit(name, delete)
        _raise_missing(wanted, deleted)
        return len(deleted)


def _raise_missing(wanted: set[str] | None, done: list[str]) -> None:
    if wanted is None:
        return
    missing = sorted(wanted - set(done))
    if missing:
        raise FailedJobNotFound(f"no failed job with id {', '.join(missing)}")
