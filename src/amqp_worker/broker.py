"""The RabbitMQ side of :class:`~amqp_worker.AMQPWorker`: connection, declarations, publishing.

One robust connection (made lazily, or handed in by the user) carries:

- a *topology* channel for declarations, so a 406 from a conflicting
  declaration never closes a channel that publishes or consumes. It is robust:
  after a reconnect, aio-pika re-declares everything declared through it;
- a *publish* channel with publisher confirms and ``mandatory`` returns
  (:mod:`amqp_worker.confirmed`);
- consumer channels, opened by the worker.

A permission the broker refuses (403) becomes
:class:`~amqp_worker.errors.AccessRefused`, a conflicting declaration (406)
:class:`~amqp_worker.errors.TopologyConflict`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aiormq.exceptions as amqp_errors
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueue,
    ExchangeType,
)

from . import lenient_decode
from .confirmed import ConfirmedPublisher, Publishable
from .connect import dial
from .errors import AccessRefused, BrokerUnavailable, ConfigurationError, TopologyConflict
from .failover import NodeRing, OutageLog, node_of
from .legacy import legacy_arguments, warn_legacy_queue
from .settings import AMQPSettings
from .topology import DELAY_RADIX, Topology

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
        self._declare_lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._topology_channel: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._confirmed = ConfirmedPublisher(
            lambda: self.channel(publisher_confirms=True),
            timeout_s=settings.publish_timeout_s,
            broker=settings.broker,
        )
        # Queues that exist with older arguments than ours, as the broker accepted them.
        self._accepted: dict[str, dict[str, Any]] = {}
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
        """A new channel on the connection."""
        connection = await self.connect()
        if publisher_confirms:
            return await connection.channel(publisher_confirms=True, on_return_raises=True)
        return await connection.channel(publisher_confirms=False)

    async def close(self) -> None:
        """Close the channels, and the connection if this broker made it."""
        await self._confirmed.close(channel=self.given_connection is not None)
        channel, self._topology_channel = self._topology_channel, None
        self._declared.clear()
        if self.given_connection is not None:
            if channel is not None and not channel.is_closed:
                await channel.close()
            return
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    # -- declarations -----------------------------------------------------------

    async def _topology(self) -> AbstractChannel:
        channel = self._topology_channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._channel_lock:
            if self._topology_channel is None or self._topology_channel.is_closed:
                self._topology_channel = await self.channel()
            return self._topology_channel

    async def declare_exchange(
        self, name: str, kind: ExchangeType, channel: AbstractChannel | None = None
    ) -> AbstractExchange:
        """Declare a durable exchange, translating a 406 into :class:`TopologyConflict`."""
        channel = channel or await self._topology()
        try:
            return await channel.declare_exchange(name, kind, durable=True)
        except amqp_errors.ChannelPreconditionFailed as exc:
            raise TopologyConflict.from_reply("exchange", name, exc, {"type": kind.value}) from None

    async def declare_queue(
        self,
        name: str,
        arguments: dict[str, Any],
        bindings: Iterable[tuple[str, str | None, dict[str, Any] | None]] = (),
        channel: AbstractChannel | None = None,
    ) -> AbstractQueue:
        """Declare a durable queue and its ``(exchange, routing_key, arguments)`` bindings.

        A quorum queue an older version declared without this version's delivery
        limit is used as it is, with a WARNING (see :mod:`amqp_worker.legacy`).
        """
        arguments = self._accepted.get(name, arguments)
        channel = channel or await self._topology()
        try:
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        except amqp_errors.ChannelPreconditionFailed as exc:
            legacy = legacy_arguments(arguments, exc)
            if legacy is None:
                raise TopologyConflict.from_reply("queue", name, exc, arguments) from None
            # The 406 closed that channel; the topology channel reopens on demand.
            queue = await self.declare_queue(name, legacy, channel=await self._topology())
            self._accepted[name] = legacy
            warn_legacy_queue(name, arguments)
        for exchange, routing_key, binding_args in bindings:
            await queue.bind(exchange, routing_key, arguments=binding_args)
        return queue

    async def _once(self, key: str, declare: Callable[[], Awaitable[None]]) -> None:
        # Declarations are cached per process: one round trip per queue, not per job.
        if key in self._declared:
            return
        async with self._declare_lock:
            if key not in self._declared:
                try:
                    await declare()
                except amqp_errors.ChannelAccessRefused as exc:
                    kind, _, queue = key.partition(":")
                    what = f"the {kind} queue of {queue!r}" if queue else f"the {kind}"
                    raise AccessRefused.from_reply(f"declare {what}", exc) from None
                self._declared.add(key)

    async def ensure_work_queue(self, queue: str) -> None:
        """Make sure jobs for ``queue`` have somewhere to go, even before any worker ran."""
        if f"work:{queue}" in self._declared:
            return  # every perform asks: answer without building the declaration
        topology = self.topology

        async def declare() -> None:
            await self.declare_exchange(topology.exchange, ExchangeType.DIRECT)
            await self.declare_queue(
                topology.work_queue(queue),
                topology.work_queue_arguments(queue),
                [(topology.exchange, queue, None)],
            )

        if topology.queue_type == "quorum":
            # Its dead-letter target: a job past the delivery limit must land somewhere.
            await self.ensure_failed_queue(queue)
        await self._once(f"work:{queue}", declare)

    async def ensure_due_queue(self, queue: str) -> None:
        """Make sure delayed jobs for ``queue`` can route all the way to its due queue."""
        await self.ensure_delays()
        await self._ensure_due(queue)

    async def ensure_delays(self) -> None:
        """Make sure the delay topology (every level's exchange, queues and bindings) exists."""
        topology = self.topology

        async def declare_delays() -> None:
            due = await self.declare_exchange(topology.due_exchange, ExchangeType.DIRECT)
            # Bottom level first: every dead-letter target exists before anything can reach it.
            below = due
            for level in range(topology.delay.levels):
                exchange = await self.declare_exchange(
                    topology.delay_exchange(level), ExchangeType.HEADERS
                )
                queues = {
                    topology.delay_queue(level, digit): await self.declare_queue(
                        topology.delay_queue(level, digit),
                        topology.delay_queue_arguments(level, digit),
                    )
                    for digit in range(1, DELAY_RADIX)
                }
                for binding in topology.delay_bindings(level):
                    destination = queues[binding.destination] if binding.kind == "queue" else below
                    await destination.bind(exchange, "", arguments=binding.arguments)
                below = exchange

        await self._once("delays", declare_delays)

    async def _ensure_due(self, queue: str) -> None:
        """The due exchange, and ``queue``'s due queue bound to it."""
        topology = self.topology

        async def declare_due() -> None:
            await self.declare_exchange(topology.due_exchange, ExchangeType.DIRECT)
            await self.declare_queue(
                topology.due_queue(queue),
                topology.work_queue_arguments(queue),
                [(topology.due_exchange, queue, None)],
            )

        await self._once(f"due:{queue}", declare_due)

    async def ensure_failed_queue(self, queue: str) -> None:
        """Make sure the failed-jobs queue of ``queue`` exists."""
        topology = self.topology

        async def declare() -> None:
            await self.declare_queue(
                topology.failed_queue(queue), topology.failed_queue_arguments()
            )

        await self._once(f"failed:{queue}", declare)

    async def ensure_quarantine_queue(self, queue: str) -> None:
        """Make sure the quarantine queue of ``queue`` exists."""
        topology = self.topology

        async def declare() -> None:
            await self.declare_queue(
                topology.quarantine_queue(queue), topology.work_queue_arguments(queue)
            )

        await self._once(f"quarantine:{queue}", declare)

    async def consumer_queues(
        self, queue: str, channels: tuple[AbstractChannel, AbstractChannel, AbstractChannel]
    ) -> tuple[AbstractQueue, AbstractQueue, AbstractQueue]:
        """Declare everything a consumer of ``queue`` needs; return its work, due and quarantine queues.

        The failed-jobs queue, the due exchange, the exchanges and bindings
        are declared (once per process) on the topology channel; the delay
        topology is not (see :meth:`ensure_delays`), so a worker consumes
        while it is declared. The consumed queues are declared again on their
        consumer ``channels`` (work, due, quarantine): a robust channel
        re-declares what was declared through it, and restores its consumers,
        after a reconnect.
        """
        topology = self.topology
        await self.ensure_failed_queue(queue)
        await self.ensure_quarantine_queue(queue)
        await self._ensure_due(queue)
        await self.ensure_work_queue(queue)
        arguments = topology.work_queue_arguments(queue)
        names = (topology.work_queue, topology.due_queue, topology.quarantine_queue)
        work, due, quarantine = [
            await self.declare_queue(name(queue), arguments, channel=channel)
            for name, channel in zip(names, channels, strict=True)
        ]
        return work, due, quarantine

    def forget(self, queue: str) -> None:
        """Forget that ``queue``'s queues were declared, so the next use declares them again."""
        self._declared -= {f"{kind}:{queue}" for kind in ("work", "due", "failed", "quarantine")}

    # -- publishing -------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, message: Publishable) -> None:
        """Publish persistently and wait for the confirm; raise a typed error otherwise.

        See :class:`~amqp_worker.confirmed.ConfirmedPublisher`.
        """
        await self._confirmed.publish(exchange, routing_key, message)
