"""Batched acks: the acks of one pass of the event loop go out as one ``basic.ack``.

A delivery is still acked only once its job succeeded, or was re-published or
parked and confirmed; batching changes *when* the ack frame is written, never
*whether*. :meth:`AckBatcher.ack` queues the delivery tag, and the acks queued
during one pass of the event loop (or :data:`MAX_BATCH` of them, whichever
comes first) are written together at the end of that pass:

- one ``basic.ack`` with ``multiple=True`` for every queued tag below the
  lowest delivery on that channel that is still open (running, waiting for a
  slot, held for its due time, or being handed back);
- one plain ``basic.ack`` for each queued tag above it.

A multiple ack covers every unacked delivery up to its tag, so every delivery
a consumer receives is recorded first (:meth:`AckBatcher.delivered`), and a
tag stays open until its nack has been written (:meth:`AckBatcher.handing_back`).

**The window.** An ack waits at most until the end of the loop pass it was
queued in: no timer, no added latency while the worker is idle. A worker that
dies or loses its connection inside that window has those jobs redelivered,
exactly like a job whose single ack was still on the wire; how many is bounded
by the prefetch. RabbitMQ counts a delivery against the prefetch until its ack
arrives, which is why the window is one loop pass and not a few milliseconds.

**In order.** Each pass's acks are written by a task of its own, and each
such task writes only once the one before it is done. Fix: a pass that
wrote the acks of two channels yielded between them, and the next pass's
multiple ack overtook its ack on the second channel; RabbitMQ closed that
channel ("unknown delivery tag"), and every job in flight on it ran twice.

Delivery tags belong to one channel. A channel that closed (a reconnect, a
stop) is forgotten with all its tags: RabbitMQ has requeued those deliveries,
and a tag must never be acked on the channel that replaced it.
"""

from __future__ import annotations

import asyncio
import logging

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel

from .connect import connection_lost
from .consumer import Delivery

__all__ = ["ACK_WRITE_TIMEOUT_S", "MAX_BATCH", "AckBatcher"]

logger = logging.getLogger("amqp_worker")

#: Queued acks that are written at once, without waiting for the end of the loop pass.
MAX_BATCH = 256
#: Longest wait to hand acks to the connection's writer. Its queue is bounded: on a
#: connection whose writer has died it never drains, and stop() must not wait forever.
ACK_WRITE_TIMEOUT_S = 5.0


class _ChannelTags:
    """The delivery tags of one (aiormq) channel."""

    __slots__ = ("open", "queued")

    def __init__(self) -> None:
        self.open: set[int] = set()
        """Delivered and not yet settled (queued acks are still open)."""
        self.queued: set[int] = set()
        """Settled successfully; the ack is not written yet."""

    def take(self) -> tuple[int | None, list[int]]:
        """Close the queued tags; return (multiple-ack tag or None, tags to ack one by one)."""
        queued, self.queued = sorted(self.queued), set()
        self.open.difference_update(queued)
        lowest_open = min(self.open) if self.open else None
        below = [tag for tag in queued if lowest_open is None or tag < lowest_open]
        above = queued[len(below) :]
        if len(below) == 1:
            return None, below + above
        return (below[-1] if below else None), above


class AckBatcher:
    """Queues acks per channel and writes each loop pass's acks together."""

    def __init__(self) -> None:
        self._channels: dict[AbstractChannel, _ChannelTags] = {}
        self._queued = 0
        self._scheduled: asyncio.Handle | None = None
        self._writing: set[asyncio.Task[None]] = set()
        self._last_write: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Acks queued or being written."""
        return self._queued + len(self._writing)

    def delivered(self, message: Delivery) -> None:
        """Record a delivery: no multiple ack may cover it until it is settled."""
        channel = _channel(message)
        if channel is None or message.delivery_tag is None:
            return
        tags = self._channels.get(channel)
        if tags is None:
            self._forget_closed()
            tags = self._channels[channel] = _ChannelTags()
        tags.open.add(message.delivery_tag)

    def queued(self, message: Delivery) -> bool:
        """True if the ack of ``message`` is queued and not yet written."""
        tags = self._tags(message)
        return tags is not None and message.delivery_tag in tags.queued

    def ack(self, message: Delivery) -> bool:
        """Queue the ack of ``message``; False if it was not recorded (ack it yourself).

        A message whose channel has closed is dropped: RabbitMQ redelivers it.
        """
        tags = self._tags(message)
        tag = message.delivery_tag
        if tags is None or tag not in tags.open:
            return False
        if tag in tags.queued:
            return True
        tags.queued.add(tag)
        self._queued += 1
        if self._queued >= MAX_BATCH:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self.flush)
        return True

    def settled(self, message: Delivery) -> None:
        """``message`` was nacked (or its channel closed): it no longer blocks a multiple ack."""
        tags = self._tags(message)
        if tags is not None and message.delivery_tag is not None:
            tags.open.discard(message.delivery_tag)

    def flush(self) -> None:
        """Write every queued ack now (in a task; :meth:`wait` waits for it)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._queued:
            return
        self._queued = 0
        batches = [
            (channel, len(tags.queued), *tags.take())
            for channel, tags in self._channels.items()
            if tags.queued
        ]
        task = asyncio.get_running_loop().create_task(_write(batches, self._last_write))
        self._last_write = task
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def wait(self) -> None:
        """Flush, and wait until every ack queued so far is written."""
        self.flush()
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    def _tags(self, message: Delivery) -> _ChannelTags | None:
        channel = _channel(message)
        return None if channel is None else self._channels.get(channel)

    def _forget_closed(self) -> None:
        for channel in [c for c in self._channels if c.is_closed]:
            del self._channels[channel]


def _channel(message: Delivery) -> AbstractChannel | None:
    """The aiormq channel ``message`` came on, or None once it has closed."""
    try:
        return message.channel
    except RuntimeError:
        return None  # closed: RabbitMQ has taken the delivery back


async def _write(
    batches: list[tuple[AbstractChannel, int, int | None, list[int]]],
    after: asyncio.Task[None] | None,
) -> None:
    """Write each channel's acks (channel, jobs, multiple-ack tag or None, single tags).

    Only once ``after``, the previous pass's write, is done: a later multiple
    ack must never reach a channel before an earlier ack it covers.
    """
    if after is not None:
        await asyncio.wait({after})
    for channel, count, multiple, singles in batches:
        try:
            async with asyncio.timeout(ACK_WRITE_TIMEOUT_S):
                if multiple is not None:
                    await channel.basic_ack(multiple, multiple=True, wait=False)
                for tag in singles:
                    await channel.basic_ack(tag, wait=False)
        except Exception as exc:
            if isinstance(exc, amqp_errors.AMQPError | TimeoutError) or connection_lost(exc):
                # The channel is gone (a reconnect, a stop): RabbitMQ already requeued those
                # deliveries, and acking them on a new channel would hit other messages.
                logger.warning(
                    "could not ack %d job(s) (%s); RabbitMQ redelivers them",
                    count,
                    type(exc).__name__,
                )
            else:
                logger.error("could not ack %d job(s)", count, exc_info=exc)
