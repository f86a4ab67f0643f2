"""The publish channel: persistent, confirmed, ``mandatory`` publishing with typed errors.

Publishing waits for the broker's confirm. A nack, a return or a refused
permission becomes a typed :class:`~amqp_worker.errors.BrokerError`; a lost
connection is waited out up to ``publish_timeout_s``, then reported. Success
is never reported for a message that was not confirmed.

Messages go to aiormq's ``basic_publish`` on the channel under aio-pika's
robust one, with their prebuilt properties: aio-pika's ``Exchange`` and
``Message`` wrappers add nothing a job needs, and building a ``Message`` costs
more than building the job (bench/README.md). The robust channel still
reopens after a reconnect; the underlying channel is looked up per publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel
from aiormq import spec

from amqp_worker.errors import (
    AccessRefused,
    BrokerUnavailable,
    JobTooLarge,
    PublishNacked,
    PublishReturned,
)

from .connect import connection_lost

__all__ = ["ConfirmedPublisher", "Publishable"]

#: RabbitMQ's reply to a body over its max_message_size (406 PRECONDITION_FAILED).
_TOO_LARGE = re.compile(r"message size \d+ is larger than configured max size")

logger = logging.getLogger("amqp_worker")


class Publishable(Protocol):
    """What can be published: aio-pika's ``Message``, or a prebuilt :class:`~amqp_worker._rabbitmq.messages.JobMessage`."""

    @property
    def body(self) -> bytes: ...

    @property
    def properties(self) -> spec.Basic.Properties: ...

    @property
    def message_id(self) -> str | None: ...


class ConfirmedPublisher:
    """One confirming publish channel at a time, opened with ``open_channel`` on first use.

    ``broker`` names the broker in errors (never with credentials).
    """

    def __init__(
        self,
        open_channel: Callable[[], Awaitable[AbstractChannel]],
        *,
        timeout_s: float,
        broker: str,
    ) -> None:
        self._open_channel = open_channel
        self._timeout_s = timeout_s
        self._broker = broker
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        # Channels retired after a nack, with the timers that close them.
        self._retired: dict[AbstractChannel, asyncio.TimerHandle] = {}

    async def _publisher(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        # One publish channel per connection: concurrent first publishes must share it.
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._open_channel()
            return self._channel

    def _retire(self) -> None:
        # Publishes waiting for their confirm on the old channel get publish_timeout_s first.
        channel, self._channel = self._channel, None
        if channel is not None and channel not in self._retired:
            self._retired[channel] = asyncio.get_running_loop().call_later(
                self._timeout_s, lambda: asyncio.ensure_future(self._close_retired(channel))
            )

    async def _close_retired(self, channel: AbstractChannel) -> None:
        self._retired.pop(channel).cancel()
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def close(self, *, channel: bool) -> None:
        """Close retired channels, and the publish channel too if ``channel``.

        Pass ``channel=False`` when the connection is about to close anyway.
        """
        for retired in list(self._retired):
            await self._close_retired(retired)
        current, self._channel = self._channel, None
        if channel and current is not None and not current.is_closed:
            await current.close()

    async def publish(self, exchange: str, routing_key: str, message: Publishable) -> None:
        """Publish ``mandatory`` and wait for the confirm; raise a typed error otherwise.

        Persistence is the message's own ``delivery_mode``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    channel = await self._publisher()
                    underlay = await channel.get_underlay_channel()
                    await underlay.basic_publish(
                        message.body,
                        exchange=exchange,
                        routing_key=routing_key,
                        properties=message.properties,
                        mandatory=True,
                    )
                return
            except amqp_errors.PublishError:
                raise PublishReturned(
                    f"job {message.message_id} was returned as unroutable: exchange "
                    f"{exchange!r} has no binding for routing key {routing_key!r}",
                    (message.message_id or "",),
                ) from None
            except amqp_errors.DeliveryError:
                # A quorum queue that nacked during a leader election keeps nacking on
                # that channel after the election (seen on 3.10): the next publish
                # opens a fresh one.
                self._retire()
                raise PublishNacked(
                    f"the broker refused job {message.message_id} (basic.nack) on exchange "
                    f"{exchange!r}; a queue may be full with x-overflow=reject-publish",
                    (message.message_id or "",),
                ) from None
            except amqp_errors.ChannelAccessRefused as exc:
                raise AccessRefused.from_reply(f"publish to exchange {exchange!r}", exc) from None
            except amqp_errors.ChannelPreconditionFailed as exc:
                # RabbitMQ 4.x refuses bodies over max_message_size (16 MiB by default;
                # 128 MiB on 3.x) by closing the channel; the next publish opens another.
                if not _TOO_LARGE.search(str(exc)):
                    raise
                raise JobTooLarge(
                    f"{self._broker} refused job {message.message_id}: its {len(message.body)} "
                    "bytes are over the broker's max_message_size (16 MiB by default on "
                    "RabbitMQ 4.x); lower max_message_bytes or raise max_message_size"
                ) from None
            except BrokerUnavailable:
                raise
            except TimeoutError:
                break
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                # The channel or connection went away: wait for the robust connection to come
                # back and publish again. A duplicate is possible; a silent loss is not.
                logger.debug("publish interrupted (%s); retrying", type(exc).__name__)
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        raise BrokerUnavailable(
            f"job {message.message_id} was not confirmed by {self._broker} "
            f"within {self._timeout_s:g}s (publish_timeout_s)"
        )
