"""StreamReader: one consumer on a stream from an offset, read again after any loss.

The results listener and scans (results.py) and the cancels listener
(cancels.py) read streams with it. Each delivery goes to a callback with the
record's ``message_id`` and body; the reader remembers the newest record's
timestamp so that, after a lost channel or connection, it reads again from
a little before it instead of from the start.

RabbitMQ's quirks shape it:

- RabbitMQ 3.10 now and then never answers a stream consume (seen under
  load): every consume is bounded by :data:`CONSUME_TIMEOUT_S`, then asked
  again on a new channel, with a WARNING so that a worker held at start by
  an unread stream says why.
- After its connection was closed, the reader asks on a probe connection
  whether the stream is readable before it consumes again
  (:func:`~amqp_worker._rabbitmq.streams.stream_readable`).
- A record written *while* a consumer with a timestamp offset attaches may
  be missed by it: RabbitMQ 4.0 resolved the offset past a record confirmed
  a few milliseconds before its ``consume-ok`` (a new cancellations stream,
  about one start in 150 here). What is written after ``consume-ok`` is
  always read, so :attr:`StreamReader.attached` tells when that is.
- A reader stopped while its consume is unanswered lets the answer come
  before it closes its channel (:func:`_answered`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq.exceptions as amqp_errors
from aiormq.abc import DeliveredMessage

from .broker import Broker
from .streams import stream_readable

__all__ = [
    "ACK_EVERY_S",
    "CLOCK_SKEW",
    "CONSUME_TIMEOUT_S",
    "STOP_WAIT_S",
    "STREAM_PREFETCH",
    "StreamReader",
]

logger = logging.getLogger("amqp_worker")

#: Stream deliveries in flight per consumer (streams require a prefetch).
STREAM_PREFETCH = 2000
#: How long a stream reader waits for its consume to be answered before it asks again.
CONSUME_TIMEOUT_S = 5.0
#: The longest a stopping stream reader is waited for (a stuck channel's close is abandoned).
STOP_WAIT_S = 2.0
#: How often a stream reader acks what it read (acks only move a stream's window).
ACK_EVERY_S = 0.02
#: Start reading this much before the time asked for: clocks of publishers and workers differ.
CLOCK_SKEW = timedelta(seconds=5)
#: The pause before a reader whose consume failed asks again.
RETRY_S = 1.0


class StreamReader:
    """One consumer on ``stream`` from ``offset``; each delivery to ``on_record(id, body)``."""

    def __init__(
        self,
        broker: Broker,
        stream: str,
        offset: datetime | str,
        on_record: Callable[[str, bytes], None],
    ) -> None:
        self._broker = broker
        self._stream = stream
        self.offset = offset
        self._on_record = on_record
        self._task: asyncio.Task[None] | None = None
        self.last_seen: datetime | None = None
        self.attached = asyncio.Event()
        """Set once RabbitMQ answered the first consume: what is written after is read."""

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Cancel the reader and wait for it (its channel may be stuck: a bounded wait).

        A reader stopped while its consume is unanswered waits for the answer
        (at most :data:`CONSUME_TIMEOUT_S`) before it closes its channel.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CONSUME_TIMEOUT_S + STOP_WAIT_S)

    async def _run(self) -> None:
        # Read until stopped; after a lost channel, read again from where it was.
        while True:
            connection_closed = False
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                logger.warning(
                    "RabbitMQ did not answer a consume of stream %s within %gs; asking again",
                    self._stream,
                    CONSUME_TIMEOUT_S,
                )
            except Exception as exc:  # a reconnect, a deleted stream: read again shortly
                logger.debug("stream reader of %s: %s; reading again", self._stream, exc)
                connection_closed = isinstance(exc, amqp_errors.AMQPConnectionError)
            await asyncio.sleep(RETRY_S)
            # After the connection itself was closed, asked on a connection of its own
            # first: a stream that is not back yet would end the worker's connection again
            # (streams.stream_readable). A consume that was only slow is asked again at once.
            if connection_closed:
                while not await stream_readable(self._broker, self._stream):  # noqa: ASYNC110
                    await asyncio.sleep(RETRY_S)
            if self.last_seen is not None:
                self.offset = self.last_seen - CLOCK_SKEW

    async def _consume(self) -> None:
        channel = await self._broker.plain_channel()
        # The delivery callback never writes: acks go out from this task, so none can
        # follow the channel's close (a frame on a closed channel ends the connection).
        unacked: list[int] = []

        async def deliver(message: DeliveredMessage) -> None:
            properties = message.header.properties
            if properties.timestamp is not None:
                self.last_seen = properties.timestamp.replace(tzinfo=UTC)
            if properties.message_id:
                self._on_record(properties.message_id, message.body)
            if message.delivery_tag is not None:
                unacked.append(message.delivery_tag)

        try:
            await channel.basic_qos(prefetch_count=STREAM_PREFETCH, timeout=CONSUME_TIMEOUT_S)
            consume = asyncio.ensure_future(
                channel.basic_consume(
                    self._stream,
                    deliver,
                    arguments={"x-stream-offset": self.offset},
                    timeout=CONSUME_TIMEOUT_S,
                )
            )
            try:
                await asyncio.shield(consume)
            except asyncio.CancelledError:
                await _answered(consume)
                raise
            self.attached.set()
            while not channel.is_closed:
                if unacked:
                    last = max(unacked)
                    unacked.clear()
                    await channel.basic_ack(last, multiple=True)
                await asyncio.sleep(ACK_EVERY_S)
        finally:
            await Broker.close_plain_channel(channel, STOP_WAIT_S)


async def _answered(consume: asyncio.Future[Any]) -> None:
    """Wait until a consume that its reader gave up on is answered (or timed out).

    Fix: a consume RPC cancelled in flight (a result scan stopped as its
    record arrived) made aiormq close the channel before RabbitMQ's
    ``consume-ok`` and the first deliveries, and RabbitMQ 3.10's connection
    then went silent: no frame for three minutes, every job on it stuck.
    The channel is closed once the consume is answered, in the usual way.
    """
    await asyncio.wait({consume})
    if not consume.cancelled():
        consume.exception()  # retrieved: the reader is stopping either way
