"""A rate limit across the fleet, on RabbitMQ alone: one leader writes the tokens.

For each handler with a ``rate``, every worker that registers it consumes
the queue ``<name>.tokens.<handler>.leader`` (single active consumer,
prefetch 1). It holds one message, the *baton*: RabbitMQ delivers it to the
active consumer, which keeps it unacked while it leads; when that consumer's
channel closes (its process died, its connection dropped), RabbitMQ puts the
baton back and hands it to the next consumer. Every worker publishes a baton
when it starts; the queue keeps at most one ready (``x-max-length`` 1,
``reject-publish``), so there are never more than two (the one held, one
waiting), and a refused one means a baton exists.

The leader writes ``rate`` tokens per second to ``<name>.tokens.<handler>``,
but never more than make ``burst`` waiting: before each write it reads how
many wait (a passive declare; only workers take tokens, so the count can only
have fallen since). The queue itself keeps at most ``burst`` (drop-head) as a
second guard. A
worker takes one token (``basic.get``) before each attempt of the handler
starts (:mod:`amqp_worker._rabbitmq.limits`). In any window of T seconds,
at most ``burst + rate * T`` attempts start, fleet-wide: the ``burst``
tokens that were waiting, and those written during the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aio_pika import Message
from aio_pika.abc import AbstractChannel
from aiormq.abc import AbstractChannel as UnderlyingChannel
from aiormq.exceptions import AMQPError

from amqp_worker._core.limits import Limits, feed_interval_s
from amqp_worker.errors import BrokerError, PublishNacked

from .broker import Broker
from .consumer import Delivery, QueueConsumer
from .extra_topology import leader_queue, leader_queue_arguments, token_queue, token_queue_arguments

__all__ = ["BATON_TYPE", "TOKEN_TYPE", "TokenLeader"]

logger = logging.getLogger("amqp_worker")

#: The AMQP ``type`` of a baton and of a token.
BATON_TYPE = "aw-rate-baton"
TOKEN_TYPE = "aw-rate-token"
#: Pause after a token write failed, before the leader writes again.
RETRY_WRITE_S = 1.0


class TokenLeader:
    """One worker's part in electing the token writer of one handler, and writing if elected."""

    def __init__(self, broker: Broker, handler: str, limits: Limits) -> None:
        assert limits.rate_per_s is not None
        self._broker = broker
        self._handler = handler
        self._rate_per_s = limits.rate_per_s
        self._burst = limits.burst
        self._tokens = token_queue(broker.topology, handler)
        self._baton = leader_queue(broker.topology, handler)
        self._channel: AbstractChannel | None = None
        self._consumer: QueueConsumer | None = None
        self._lead_channel: UnderlyingChannel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        """True while this worker holds the baton on an open channel."""
        channel = self._lead_channel
        return channel is not None and not channel.is_closed

    async def start(self) -> None:
        """Declare both queues, offer a baton, and consume the baton queue."""
        declarations = self._broker.declarations
        self._channel = channel = await self._broker.channel()
        await channel.set_qos(prefetch_count=1)
        await declarations.declare_queue(
            self._tokens, token_queue_arguments(self._burst), channel=channel
        )
        await declarations.declare_queue(self._baton, leader_queue_arguments(), channel=channel)
        with contextlib.suppress(PublishNacked):
            # Refused: a baton is waiting already (the queue keeps at most one ready).
            await self._broker.publish("", self._baton, Message(b"", type=BATON_TYPE))
        self._consumer = QueueConsumer(channel, self._baton, self._on_baton)
        await self._consumer.start()

    async def stop(self) -> None:
        """Stop writing; closing the channel hands the baton to the next worker at once."""
        await self._stop_writing()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.cancel()
        channel, self._channel = self._channel, None
        self._lead_channel = None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _on_baton(self, delivery: Delivery) -> None:
        if self.leading and delivery.came_on is self._lead_channel:
            # A second baton while holding one: let it go; one writer is enough.
            with contextlib.suppress(Exception):
                await delivery.ack()
            return
        await self._stop_writing()
        self._lead_channel = delivery.came_on
        logger.info(
            "this worker writes the rate tokens of handler %r now (%g/s, burst %d)",
            self._handler,
            self._rate_per_s,
            self._burst,
        )
        self._task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        """Write ``rate`` tokens a second while leading; a full queue drops the oldest."""
        interval_s = feed_interval_s(self._rate_per_s)
        credit = 0.0
        last = time.monotonic()
        while self.leading:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            credit = min(credit + (now - last) * self._rate_per_s, float(self._burst))
            last = now
            due = int(credit)
            if due == 0:
                continue
            credit -= due
            try:
                # Never more than `burst` tokens waiting or on their way: a token still in
                # flight when workers empty the queue would be one over the bound.
                due = min(due, self._burst - await self._waiting())
                await asyncio.gather(
                    *(
                        self._broker.publish("", self._tokens, Message(b"", type=TOKEN_TYPE))
                        for _ in range(due)
                    )
                )
            except (BrokerError, AMQPError, RuntimeError) as exc:
                if not self.leading:
                    return
                logger.warning(
                    "could not write rate tokens of handler %r (%s); trying again in %gs",
                    self._handler,
                    exc,
                    RETRY_WRITE_S,
                )
                await asyncio.sleep(RETRY_WRITE_S)
                last = time.monotonic()  # no catching up: a burst after an outage is capped

    async def _waiting(self) -> int:
        """Tokens waiting now (a passive declare); only workers take them, so never more later."""
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        declared = await underlay.queue_declare(self._tokens, passive=True)
        return declared.message_count or 0

    async def _stop_writing(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
