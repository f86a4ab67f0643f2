"""Groups on RabbitMQ: a queue per open group, and a callback that leaves it exactly once.

- ``perform_group`` declares the group's queue ``<name>.group.<id>`` and puts
  the *callback job itself* in it first (or a plain opener without one),
  then enqueues the members. The queue dead-letters to the callback's work
  queue; it has no TTL and no ``x-expires`` (it holds a job).
- A member that succeeds (or is parked) publishes a *marker* to that queue,
  confirmed, before its own job is acked; then it asks the queue's message
  count. When the count reaches size + 1, it *collects*: it consumes the queue
  **exclusively** (a second collector is refused by the broker), reads every
  message, and counts distinct members.
- Complete (or every member finished, with ``then_if_failed``): the collector
  rejects the callback message without requeue. RabbitMQ dead-letters it to
  its work queue: taking it out of the group queue and enqueueing it is one
  broker step, so no crash of a worker can enqueue it twice or lose it. Then
  the markers are acked, a record of the finished group is kept in the
  results stream, and the queue is deleted.
- Incomplete: everything is handed back and the count asked again (markers
  that arrived while it collected are found then).

A crash anywhere redelivers the member job, which publishes its marker again
(counted once) and checks again; a collector's death hands its messages back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

import aiormq.exceptions as amqp_errors
from aio_pika import DeliveryMode, Message
from aiormq.abc import AbstractChannel as UnderlyingChannel
from aiormq.abc import DeliveredMessage
from pamqp.common import FieldValue

from amqp_worker._core.groups import GroupState, GroupStatus, ParkedMember
from amqp_worker._core.job import Job
from amqp_worker._core.workflow import Group
from amqp_worker.errors import GroupExists, PublishReturned, ResultTimeout

from .broker import Broker
from .extra_topology import group_queue_arguments
from .messages import job_message
from .queue_counts import QueueCounts
from .results import RabbitResults

__all__ = ["RabbitGroups"]

logger = logging.getLogger("amqp_worker")

KIND_HEADER = "aw-kind"
#: Header of the first message: how many members, and whether a parked one still lets it go.
SIZE_HEADER = "aw-group-size"
IF_FAILED_HEADER = "aw-then-if-failed"
#: How long a collector waits for the messages the count promised.
COLLECT_WAIT_S = 5.0
#: Collections in a row by one member (each only if markers arrived meanwhile).
MAX_ROUNDS = 4
#: How long a status read waits for a collector that holds the queue.
STATUS_RETRIES = 50
#: Collectors' consumer tags start so; aiormq's WARNING when the broker cancels one
#: (the collector deleted the finished group's queue under itself) is expected.
COLLECTOR_TAG = "aw-group-collector-"


class _CollectorCancelled(logging.Filter):
    """Drops aiormq's "cancelled by the broker" record for a group collector's own consumer."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (args and isinstance(args[0], str) and args[0].startswith(COLLECTOR_TAG))


def _quiet_collector_cancels() -> None:
    channel_log = logging.getLogger("aiormq.channel")
    if not any(isinstance(f, _CollectorCancelled) for f in channel_log.filters):
        channel_log.addFilter(_CollectorCancelled())


@dataclass(slots=True)
class _Read:
    """What one collection found in a group queue."""

    opener: DeliveredMessage | None = None
    size: int = 0
    then_if_failed: bool = False
    succeeded: set[int] = field(default_factory=set)
    parked: dict[int, ParkedMember] = field(default_factory=dict)
    messages: list[DeliveredMessage] = field(default_factory=list)
    #: How many messages the decision to let go (or not) was taken on; more may come after.
    looked: int = 0
    #: Whether this read let the group go (its callback enqueued, its queue deleted).
    let_go: bool = False

    def add(self, message: DeliveredMessage) -> None:
        self.messages.append(message)
        headers = message.header.properties.headers or {}
        if headers.get(KIND_HEADER) == "member":
            try:
                marker = json.loads(message.body)
                index = int(marker["index"])
            except (ValueError, KeyError, TypeError):
                return  # not ours: ignored, and acked with the rest in the end
            self.size = max(self.size, int(marker.get("size", 0)))
            if marker.get("ok"):
                self.succeeded.add(index)
                self.parked.pop(index, None)
            elif index not in self.succeeded:
                self.parked[index] = ParkedMember(
                    index=index, job_id=str(marker.get("job_id", "")), reason=str(marker["reason"])
                )
        elif self.opener is None:
            self.opener = message
            size = headers.get(SIZE_HEADER)
            self.size = max(self.size, size if isinstance(size, int) else 0)
            self.then_if_failed = bool(headers.get(IF_FAILED_HEADER))

    @property
    def complete(self) -> bool:
        return self.size > 0 and len(self.succeeded) >= self.size

    @property
    def resolved(self) -> bool:
        return self.size > 0 and len(self.succeeded) + len(self.parked) >= self.size

    @property
    def goes(self) -> bool:
        """Whether the group may be let go: complete (or resolved, with ``then_if_failed``).

        Fix: only with its first message in hand. Markers carry the size too, so a
        read of every marker without the callback (held back by an earlier holder's
        channel, or not yet delivered) counted as complete; the queue was then
        deleted with the callback in it, which never ran.
        """
        if self.opener is None:
            return False
        return self.complete or (self.resolved and self.then_if_failed)

    def status(self, group_id: str, state: GroupState) -> GroupStatus:
        return GroupStatus(
            id=group_id,
            state=state,
            size=self.size,
            succeeded=len(self.succeeded),
            parked=sorted(self.parked.values(), key=lambda member: member.index),
        )


class RabbitGroups:
    """Opens groups, takes members' markers, lets callbacks go; see the module docstring."""

    def __init__(self, broker: Broker, results: RabbitResults) -> None:
        _quiet_collector_cancels()
        self._broker = broker
        self._topology = broker.topology
        self._results = results
        self._opened: dict[str, datetime] = {}
        self._counts = QueueCounts(broker)

    async def open(self, group: Group, now: datetime) -> None:
        """Declare ``group``'s queue holding its callback; :class:`GroupExists` if it is open."""
        name = self._topology.group_queue(group.id)
        if await self._counts.count(name) is not None:
            raise GroupExists(f"group {group.id} is still open: choose another group_id")
        then = group.then
        if then is not None:
            # Dead-lettering into a queue that does not exist would drop the callback.
            await self._broker.declarations.ensure_work_queue(then.queue)
        # Declared on the kept errand channel, never the shared topology channel (fix: that
        # one re-declares its queues on every reconnect: a finished group's queue came back
        # empty, without its callback, and kept the late markers of redelivered members).
        await self._counts.declare(
            name, group_queue_arguments(self._topology, then.queue if then else None)
        )
        headers: dict[str, FieldValue] = {
            KIND_HEADER: "callback" if then is not None else "opener",
            SIZE_HEADER: len(group.members),
            IF_FAILED_HEADER: group.then_if_failed,
        }
        if then is not None:
            message = job_message(
                then, headers=headers, max_bytes=self._broker.settings.max_message_bytes
            )
            await self._broker.publish("", name, message)
        else:
            opener = Message(b"{}", headers=headers, delivery_mode=DeliveryMode.PERSISTENT)
            await self._broker.publish("", name, opener)
        self._opened[group.id] = now

    async def resolved(self, job: Job, ok: bool, reason: str | None) -> None:
        """Publish ``job``'s marker (confirmed), then collect if the count says it may be time."""
        member = job.group
        assert member is not None
        name = self._topology.group_queue(member.id)
        marker = {"index": member.index, "size": member.size, "job_id": job.id, "ok": ok}
        if not ok:
            marker["reason"] = reason or "unknown"
        message = Message(
            json.dumps(marker).encode(),
            message_id=f"{member.id}:{member.index}",
            headers={KIND_HEADER: "member"},
            delivery_mode=DeliveryMode.PERSISTENT,
        )
        try:
            await self._broker.publish("", name, message)
        except PublishReturned:
            # The group's queue is gone: it finished (this is a late duplicate) or was purged.
            logger.info("group %s is closed; member %s reported late", member.id, job.id)
            return
        await self._check(member.id, name, member.size)

    async def _check(self, group_id: str, name: str, size: int, seen: int = 0) -> None:
        """Collect while the count says every member may have reported and markers came since.

        ``seen``: messages the caller's own read held. A marker published while
        a reader holds the queue is not in the count its member asks, so every
        reader that hands the queue back looks again, here.
        """
        for _ in range(MAX_ROUNDS):
            count = await self._counts.count(name)
            if count is None or count < size + 1 or count <= seen:
                return
            read = await self._collect(group_id, name, finish=True)
            if read is None:
                return  # another reader holds the queue: it looks again after
            seen = read.looked

    async def status(self, group_id: str) -> GroupStatus:
        """Read the group's markers without taking them; a finished group from the stream."""
        name = self._topology.group_queue(group_id)
        for _ in range(STATUS_RETRIES):
            if await self._counts.count(name) is None:
                break
            # A status read may find the group complete and let it go: that is what any
            # collector does, and it keeps every marker's arrival looked at.
            read = await self._collect(group_id, name, finish=True)
            if read is not None:
                if not read.messages and read.opener is None:
                    break  # it just finished: its record is in the stream
                # Fix: "finished" only if this read let it go (it said so for a read that
                # turned complete after its decision, while the group stayed open).
                failed = read.resolved and not read.complete
                state: GroupState = "finished" if read.let_go else "failed" if failed else "open"
                if not read.let_go:
                    # Fix: the last marker may have come while this read held the queue; its
                    # member's count missed it and nobody looked again: the group stayed
                    # open, its callback waiting, until some later status read.
                    await self._check(group_id, name, read.size, read.looked)
                    if await self._counts.count(name) is None:
                        break  # that look let it go: its record is in the stream
                return read.status(group_id, state)
            await asyncio.sleep(0.1)  # a collector holds it for a moment
        else:
            return GroupStatus(id=group_id, state="open")
        try:
            body = await self._results.wait(f"group:{group_id}", 3.0, self._opened.get(group_id))
        except ResultTimeout:
            return GroupStatus(id=group_id, state="unknown")
        return GroupStatus.model_validate_json(body)

    async def _collect(self, group_id: str, name: str, *, finish: bool) -> _Read | None:
        """Read every message of the group queue, holding it exclusively; None if refused or gone.

        With ``finish``, a group that may go is let go (see the module
        docstring); anything else is handed back.
        """
        channel = await self._broker.plain_channel()
        read = _Read()
        try:
            try:
                declared = await channel.queue_declare(name, passive=True)
            except amqp_errors.ChannelNotFoundEntity:
                return None
            expected = int(declared.message_count or 0)
            enough = asyncio.Event()

            async def deliver(message: DeliveredMessage) -> None:
                read.add(message)
                if len(read.messages) >= expected:
                    enough.set()

            if expected == 0:
                enough.set()
            await channel.basic_qos(prefetch_count=0)
            try:
                consumed = await channel.basic_consume(
                    name, deliver, exclusive=True, consumer_tag=f"{COLLECTOR_TAG}{id(read)}"
                )
            except (amqp_errors.ChannelAccessRefused, amqp_errors.ChannelLockedResource):
                return None  # another collector holds the queue
            except amqp_errors.ChannelNotFoundEntity:
                # Fix: another collector finished the group and deleted its queue between
                # the declare above and this consume (a status read failed so, under load).
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), COLLECT_WAIT_S)
            # Fix: a reader that hands back looks again if the count is over what it
            # decided on (``looked``), not over what it held: a marker delivered after
            # the decision was held, handed back, and then counted by nobody.
            read.looked = len(read.messages)
            if finish and read.goes:
                # Deleted while still held: no other collector can slip in before the delete.
                await self._finish(group_id, name, channel, read)
                read.let_go = True
                return read
            if consumed.consumer_tag is not None:
                await channel.basic_cancel(consumed.consumer_tag)
            last = read.messages[-1].delivery_tag if read.messages else None
            if last is not None:
                await channel.basic_nack(last, multiple=True, requeue=True)
            return read
        except (amqp_errors.ChannelAccessRefused, amqp_errors.ChannelLockedResource):
            return None
        finally:
            await Broker.close_plain_channel(channel)

    async def close(self) -> None:
        """Close the kept errand channels (the connection is closing)."""
        await self._counts.close()

    async def _finish(
        self, group_id: str, name: str, channel: UnderlyingChannel, read: _Read
    ) -> None:
        opener = read.opener
        if opener is not None and opener.delivery_tag is not None:
            # The one step that lets the callback go: RabbitMQ moves it to its work queue.
            await channel.basic_reject(opener.delivery_tag, requeue=False)
        status = read.status(group_id, "finished")
        await self._results.store(f"group:{group_id}", status.model_dump_json().encode(), "group")
        tags = [m.delivery_tag for m in read.messages if m is not opener and m.delivery_tag]
        if tags:
            # Every tag up to the last, at once; the rejected opener is no longer pending.
            await channel.basic_ack(max(tags), multiple=True)
        await channel.queue_delete(name)
        if opener is not None:
            logger.info(
                "group %s finished: %d/%d succeeded; its callback is enqueued",
                group_id,
                len(read.succeeded),
                read.size,
            )
