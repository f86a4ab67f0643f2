"""The RabbitMQ side of :class:`~amqp_worker.AMQPWorker`: connection, declarations, publishing.

One robust connection (made lazily, or handed in by the user) carries:

- a *topology* channel for declarations, so a 406 from a conflicting
  declaration never closes a channel that publishes or consumes. It is robust:
  after a reconnect, aio-pika re-declares everything declared through it;
- a *publish* channel with publisher confirms and ``mandatory`` returns
  (:mod:`amqp_worker._rabbitmq.confirmed`);
- consumer channels, opened by the worker.

A permission the broker refuses (403) becomes
:class:`~amqp_worker.errors.AccessRefused`, a conflicting declaration (406)
:class:`~amqp_worker.errors.TopologyConflict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from typing import TypeVar

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
)
from aiormq.abc import AbstractChannel as UnderlyingChannel

from amqp_worker.errors import (
    BrokerUnavailable,
    ConfigurationError,
)

from . import lenient_decode
from .channel_numbers import ChannelNumbers
from .confirmed import ConfirmedPublisher, Publish, Publishable
from .connect import dial
from .declarations import Declarations
from .failover import NodeRing, OutageLog, node_of
from .settings import AMQPSettings
from .topology import Topology

__all__ = ["Broker"]

logger = logging.getLogger("amqp_worker")

T = TypeVar("T")


class Broker:
    """Connection, channels, declarations and confirmed publishing for one worker."""

    def __init__(
        self,
        settings: AMQPSettings,
        *,
        connection: AbstractConnection | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if ssl_context is not None and not settings.url.get_secret_value().startswith("amqps:"):
            # aio-pika silently ignores an SSL context on an amqp:// URL: refuse instead.
            raise ConfigurationError("an ssl_context needs an amqps:// URL")
        # Before any frame is read: one message another client wrote must never
        # be able to close every connection that receives it (lenient_decode.py).
        lenient_decode.install()
        self.settings = settings
        self.topology: Topology = settings.topology
        self.ssl_context = ssl_context
        """The TLS context the user passed in, or None for the default."""
        self.given_connection = connection
        """The connection the user passed in (never closed here), or None."""
        self._connection: AbstractConnection | None = connection
        self._connect_lock = asyncio.Lock()
        self._numbers = ChannelNumbers()
        self.declarations = Declarations(settings.topology, self.channel)
        """Exchanges, queues and bindings, declared once per process (declarations.py)."""
        self._confirmed = ConfirmedPublisher(
            lambda: self.channel(publisher_confirms=True),
            timeout_s=settings.publish_timeout_s,
            broker=settings.broker,
        )
        # Shuffled once per worker, so a fleet spreads its connections over the nodes.
        self._ring = NodeRing(settings.urls)

    def __repr__(self) -> str:
        return f"<Broker {self.node or self.settings.broker}>"

    # -- connection -----------------------------------------------------------

    @property
    def node(self) -> str | None:
        """The node this broker is connected to (or last dialled), for logs; never credentials."""
        return node_of(self._connection) if self._connection is not None else None

    @property
    def connection(self) -> AbstractConnection | None:
        """The current connection, if any."""
        return self._connection

    async def connect(self, timeout_s: float | None = None) -> AbstractConnection:
        """The connection, made on first use; retried until ``timeout_s`` (publish_timeout_s)."""
        if self._connection is not None and not self._connection.is_closed:
            return self._connection
        async with self._connect_lock:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            if self.given_connection is not None:
                raise BrokerUnavailable("the connection given to the worker is closed")
            self._connection = await self._dial(timeout_s or self.settings.publish_timeout_s)
            return self._connection

    async def _dial(self, timeout_s: float) -> AbstractConnection:
        connection = await dial(
            self.settings,
            timeout_s,
            ring=self._ring,
            ssl_context=self.ssl_context,
            connection_name=self.settings.connection_name,
        )
        logger.info("connected to %s", node_of(connection))
        OutageLog(several_nodes=len(self._ring) > 1).attach(connection)
        return connection

    async def channel(self, *, publisher_confirms: bool = False) -> AbstractChannel:
        """A new channel on the connection (its number from :mod:`.channel_numbers`)."""
        connection = await self.connect()
        number = self._channel_number(connection)
        if publisher_confirms:
            channel = await connection.channel(
                channel_number=number, publisher_confirms=True, on_return_raises=True
            )
        else:
            channel = await connection.channel(channel_number=number, publisher_confirms=False)
        self._numbers.keep(channel)
        return channel

    def _channel_number(self, connection: AbstractConnection) -> int | None:
        """The next number for a channel on ``connection``; None lets aiormq choose."""
        transport = getattr(connection, "transport", None)
        if transport is None:
            return None  # reconnecting: the open fails as it would have
        underlying = transport.connection
        tune = getattr(underlying, "connection_tune", None)
        return self._numbers.next(underlying.channels, getattr(tune, "channel_max", None))

    async def plain_channel(self, *, publisher_confirms: bool = False) -> UnderlyingChannel:
        """A channel of the underlying aiormq connection, for one short errand.

        Not robust: when the broker closes it (a 404 of a passive declare, a
        403 of an exclusive consume), it stays closed; aio-pika does not
        reopen it, or restore its consumers, behind the caller's back. Close it when done.
        With ``publisher_confirms``, a publish returns the broker's ack or nack,
        and raises aiormq's ``PublishError`` if it was returned.
        """
        connection = await self.connect()
        transport = getattr(connection, "transport", None)
        if transport is None:
            raise RuntimeError("Connection is not ready")  # reconnecting: connection_lost()
        channel: UnderlyingChannel = await transport.connection.channel(
            channel_number=self._channel_number(connection), publisher_confirms=publisher_confirms
        )
        return channel

    @staticmethod
    async def close_plain_channel(
        channel: UnderlyingChannel, timeout_s: float | None = None
    ) -> None:
        """Close a :meth:`plain_channel`, unless the broker closed it already (a 403, a 404).

        Errors are swallowed: the errand is over either way. ``timeout_s``
        bounds the wait for the broker's answer (None: no bound).
        """
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), timeout_s)

    async def close(self) -> None:
        """Close the channels, and the connection if this broker made it."""
        await self._confirmed.close(channel=self.given_connection is not None)
        await self.declarations.close(close_channel=self.given_connection is not None)
        if self.given_connection is not None:
            return
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    # -- publishing -------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, message: Publishable) -> None:
        """Publish persistently and wait for the confirm; raise a typed error otherwise.

        See :class:`~amqp_worker._rabbitmq.confirmed.ConfirmedPublisher`.
        """
        await self._confirmed.publish(exchange, routing_key, message)

    async def publish_all(
        self, publishes: Sequence[Publish], in_flight: int
    ) -> list[BaseException | None]:
        """Publish each, at most ``in_flight`` unconfirmed at once; each one's error or None.

        See :meth:`~amqp_worker._rabbitmq.confirmed.ConfirmedPublisher.publish_all`.
        """
        return await self._confirmed.publish_all(publishes, in_flight)
