"""Consuming a queue at the aiormq level: each delivery read once, with no wrapper per message.

aio-pika's ``queue.consume`` wraps every delivery in an ``IncomingMessage``
(about 28 attribute writes through a checking ``__setattr__``) and runs the
callback in one more task. For a job queue that is most of what a delivery
costs the client (bench/README.md), so a worker consumes on the aiormq
channel under aio-pika's robust one, and each delivery becomes a
:class:`Delivery`: the few fields a worker reads, taken as they are.

aio-pika still does what it is good at. The channel stays robust: after a
reconnect it is reopened, its QoS and queue declarations restored; then
:class:`QueueConsumer` consumes again on the new channel (its
``reopen_callbacks``). A consumer the broker cancels (its queue was deleted,
or moved off a node that left the cluster) is consumed again after a pause;
if its queue is gone, that fails and closes the channel, which the robust
channel then reopens, re-declaring the queue, and this consumes once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel
from aiormq.abc import AbstractChannel as UnderlyingChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from amqp_worker.errors import AccessRefused

from .connect import connection_lost

__all__ = ["Delivery", "QueueConsumer"]

logger = logging.getLogger("amqp_worker")

#: Wait before consuming again a queue whose consumer the broker cancelled.
RECONSUME_PAUSE_S = 1.0
#: How often a consumer checks that the channel in use still has it.
KEEP_CONSUMING_S = 1.0


class Delivery:
    """One message delivered to a worker: what it carries, and ack / nack on its channel.

    It reads like aio-pika's ``IncomingMessage`` for the fields a worker uses.
    """

    __slots__ = ("_channel", "_properties", "body", "delivery_tag", "processed", "redelivered")

    def __init__(self, message: DeliveredMessage) -> None:
        delivery = message.delivery
        assert isinstance(delivery, Basic.Deliver)  # a consumer gets nothing else
        self._channel = message.channel
        self._properties = message.header.properties
        self.body: bytes = message.body
        self.delivery_tag: int | None = delivery.delivery_tag
        self.redelivered: bool = bool(delivery.redelivered)
        self.processed = False
        """True once this delivery was acked or nacked through it."""

    @property
    def headers(self) -> dict[str, Any]:
        """The message's headers ({} if none)."""
        return self._properties.headers or {}

    @property
    def message_id(self) -> str | None:
        return self._properties.message_id

    @property
    def content_type(self) -> str | None:
        return self._properties.content_type

    @property
    def type(self) -> str | None:
        return self._properties.message_type

    @property
    def timestamp(self) -> datetime | None:
        return self._properties.timestamp

    @property
    def came_on(self) -> UnderlyingChannel:
        """The channel it came on, open or closed (to tell one channel's deliveries from another's)."""
        return self._channel

    @property
    def channel(self) -> UnderlyingChannel:
        """The channel it came on; raises ``ChannelInvalidStateError`` once that has closed."""
        if self._channel.is_closed:
            raise amqp_errors.ChannelInvalidStateError(f"{self._channel!r} closed")
        return self._channel

    async def ack(self) -> None:
        """Ack this delivery alone (a worker acks through :mod:`amqp_worker._rabbitmq.acks`)."""
        await self.channel.basic_ack(self._tag())
        self.processed = True

    async def nack(self, requeue: bool = True) -> None:
        """Nack this delivery; with ``requeue`` RabbitMQ delivers it again."""
        await self.channel.basic_nack(self._tag(), requeue=requeue)
        self.processed = True

    def _tag(self) -> int:
        if self.processed:
            raise amqp_errors.AMQPError(f"delivery {self.delivery_tag} was settled already")
        assert self.delivery_tag is not None
        return self.delivery_tag

    def __repr__(self) -> str:
        return f"<Delivery {self.delivery_tag} id={self.message_id!r}>"


class QueueConsumer:
    """Consumes ``queue`` on ``channel`` and calls ``callback`` with each :class:`Delivery`."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: str,
        callback: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        self._channel = channel
        self._queue = queue
        self._callback = callback
        self._underlying: UnderlyingChannel | None = None
        self._tag: str | None = None
        self._cancelled = False
        self._again: asyncio.Task[None] | None = None
        self._watch: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def queue(self) -> str:
        return self._queue

    async def start(self) -> None:
        """Consume; after every reopen of a robust channel, consume again."""
        await self._consume()
        reopened = getattr(self._channel, "reopen_callbacks", None)
        if reopened is not None:
            reopened.add(self._on_reopen)
        self._watch = asyncio.ensure_future(self._keep_consuming())

    async def _consume(self) -> None:
        async with self._lock:
            underlying = await self._channel.get_underlay_channel()
            if self._consuming_on(underlying):
                return  # the reopen callback and the check below may both get here
            try:
                ok = await underlying.basic_consume(self._queue, self._deliver)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AccessRefused.from_reply(f"consume {self._queue!r}", exc) from None
            self._underlying, self._tag = underlying, ok.consumer_tag
            underlying.on_consumer_cancel_callbacks.add(self._on_cancel)

    def _consuming_on(self, underlying: UnderlyingChannel) -> bool:
        consumers = getattr(underlying, "consumers", {})
        return (
            underlying is self._underlying
            and not underlying.is_closed
            and self._tag is not None
            and self._tag in consumers
        )

    async def _keep_consuming(self) -> None:
        """Every second, make sure the channel in use has this consumer.

        The reopen callback normally does it. It can miss: a reopen that fails
        half-way (the connection flapped again) is retried by aio-pika, but a
        consume that failed inside the callback is not. Seen after a connection
        held silent past the heartbeat (tests/amqp/test_network_cuts.py).
        """
        while not self._cancelled:
            await asyncio.sleep(KEEP_CONSUMING_S)
            if self._cancelled or self._channel.is_closed:
                continue  # a robust channel that is being restored reads as closed
            try:
                underlying = await asyncio.wait_for(
                    self._channel.get_underlay_channel(), KEEP_CONSUMING_S
                )
                if not self._consuming_on(underlying):
                    logger.info("consuming %s again (its consumer was gone)", self._queue)
                    await self._consume()
            except Exception as exc:
                if not (
                    isinstance(exc, amqp_errors.AMQPError | TimeoutError) or connection_lost(exc)
                ):
                    raise
                logger.debug("could not check the consumer of %s yet: %s", self._queue, exc)

    async def _deliver(self, message: DeliveredMessage) -> None:
        await self._callback(Delivery(message))

    async def _on_reopen(self, *_: Any) -> None:
        if self._cancelled:
            return
        try:
            await self._consume()
        except Exception as exc:
            # _keep_consuming tries again within a second.
            logger.debug("could not consume %s on the reopened channel: %s", self._queue, exc)

    async def _on_cancel(self, frame: Basic.Cancel | Basic.CancelOk) -> None:
        if (
            self._cancelled
            or not isinstance(frame, Basic.Cancel)
            or frame.consumer_tag != self._tag
        ):
            return
        logger.warning(
            "RabbitMQ cancelled the consumer of %s (queue deleted, or moved to another node); "
            "consuming it again in %gs",
            self._queue,
            RECONSUME_PAUSE_S,
        )
        self._again = asyncio.ensure_future(self._consume_again())

    async def _consume_again(self) -> None:
        await asyncio.sleep(RECONSUME_PAUSE_S)
        if self._cancelled:
            return
        try:
            await self._consume()
        except Exception as exc:
            if not (isinstance(exc, amqp_errors.AMQPError) or connection_lost(exc)):
                raise
            # The channel closed (its queue is gone, say): the robust channel reopens
            # it, re-declaring the queue, and _on_reopen consumes again.
            logger.warning("could not consume %s again yet (%s)", self._queue, exc)

    async def cancel(self) -> None:
        """Stop consuming: no delivery after this returns (the broker's CancelOk)."""
        self._cancelled = True
        reopened = getattr(self._channel, "reopen_callbacks", None)
        if reopened is not None:
            reopened.discard(self._on_reopen)
        for task in (self._again, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        underlying, tag = self._underlying, self._tag
        if underlying is not None and tag is not None and not underlying.is_closed:
            underlying.on_consumer_cancel_callbacks.discard(self._on_cancel)
            await underlying.basic_cancel(tag)
