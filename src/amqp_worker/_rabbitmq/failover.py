"""Several broker addresses for one cluster: which node to dial, and moving on when it dies.

``url`` may list the nodes of one RabbitMQ cluster, comma-separated. Each
worker shuffles the list once (:class:`NodeRing`), so a fleet of workers
spreads its connections over the nodes, then dials the nodes in that order.
Once connected it stays on its node; when the connection is lost,
:class:`FailoverConnection` (aio-pika's robust connection, which re-opens
channels, re-declares topology and restores consumers) tries the *next* node
first, so a dead node costs one refused or timed-out attempt per outage, not
one per round.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

from aio_pika import RobustChannel, RobustConnection
from aio_pika.abc import AbstractConnection, AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from .redact import describe_url

__all__ = ["FailoverConnection", "NodeRing", "OutageLog", "node_of"]

logger = logging.getLogger("amqp_worker")


def node_of(connection: object) -> str:
    """The node ``connection`` is on (aio-pika keeps its URL), described without credentials."""
    return describe_url(str(getattr(connection, "url", "?")))


class OutageLog:
    """Logs a lost connection once per outage (WARNING) and where it came back (INFO).

    aio-pika calls the close callbacks again for every failed reconnect
    attempt; the log says it once.
    """

    def __init__(self, *, several_nodes: bool) -> None:
        self._several_nodes = several_nodes
        self._outage = False

    def attach(self, connection: AbstractConnection) -> None:
        """Listen to ``connection``'s close (and, if robust, reconnect) callbacks."""
        connection.close_callbacks.add(self._on_close)
        if isinstance(connection, AbstractRobustConnection):
            connection.reconnect_callbacks.add(self._on_reconnect)

    def _on_close(self, connection: object, exc: BaseException | None) -> None:
        if exc is None or isinstance(exc, asyncio.CancelledError) or self._outage:
            return
        self._outage = True
        logger.warning(
            "connection to %s lost (%s); reconnecting%s",
            node_of(connection),
            type(exc).__name__,
            " to the next node" if self._several_nodes else "",
        )

    def _on_reconnect(self, connection: object) -> None:
        self._outage = False
        logger.info("reconnected to %s; topology re-declared", node_of(connection))


class NodeRing:
    """The URLs of one cluster's nodes, in this worker's (shuffled) order, and the one in use.

    Holds secrets: never log it, never put it in a repr.
    """

    def __init__(self, urls: Sequence[str], *, shuffle: bool = True) -> None:
        if not urls:
            raise ValueError("a NodeRing needs at least one URL")
        self._urls = list(urls)
        if shuffle:
            random.shuffle(self._urls)
        self._index = 0

    def __len__(self) -> int:
        return len(self._urls)

    def __repr__(self) -> str:
        return f"<NodeRing of {len(self._urls)} node(s)>"

    @property
    def current(self) -> str:
        """The node to dial now."""
        return self._urls[self._index]

    def advance(self) -> str:
        """Move on to the next node (after the last, the first again) and return it."""
        self._index = (self._index + 1) % len(self._urls)
        return self.current

    def round(self) -> list[str]:
        """Every node once, starting with the current one."""
        return self._urls[self._index :] + self._urls[: self._index]

    def use(self, url: str) -> None:
        """Make ``url`` (one of the ring's) the current node."""
        self._index = self._urls.index(url)


class _FailoverChannel(RobustChannel):
    """A robust channel that is never reopened if it failed to open in the first place.

    aio-pika registers a channel with its connection before opening it; one
    whose first open failed (the connection went away meanwhile) would
    otherwise be reopened by every later reconnect, an open channel nobody
    uses, one more per outage.
    """

    _abandoned = False

    async def initialize(self, timeout: Any = None) -> None:  # noqa: ASYNC109 - aio-pika's
        try:
            await super().initialize(timeout)
        except BaseException:
            self._abandoned = True
            raise

    async def restore(self, channel: Any = None) -> None:
        if not self._abandoned:
            await super().restore(channel)


class FailoverConnection(RobustConnection):
    """A robust connection that moves to the next node of its ring on every new attempt.

    aio-pika's reconnect loop clears the connection's transport at the start
    of each attempt; that is the moment the next node gets its turn. The
    first attempt uses the URL the connection was made with.

    New channels are refused (``RuntimeError("Connection is not ready")``,
    which :func:`~amqp_worker._rabbitmq.connect.connection_lost` recognises) from the
    moment the connection is lost until aio-pika has restored the existing
    channels after a reconnect. Until then an existing channel reads as
    closed; a caller that replaced it with a new one would leave the old one
    to be restored as well, open and unused: one leaked channel per outage.
    """

    CHANNEL_CLASS = _FailoverChannel

    def __init__(self, url: URL, *args: Any, ring: NodeRing, **kwargs: Any) -> None:
        self._ring = ring
        self._clears = 0
        self._restored = False
        super().__init__(url, *args, **kwargs)

    @property
    def transport(self) -> Any:
        """The current transport (aio-pika's), None between connections."""
        return self.__dict__.get("_failover_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None:
            self._restored = False
            # Cleared once by Connection.__init__, then once at the start of every
            # connection attempt: from the second attempt on, dial the next node.
            self._clears += 1
            if self._clears > 2 and len(self._ring) > 1:
                # The TLS and timeout options were read from the first URL's query;
                # every entry of the list has the same one (AMQPSettings checks).
                self.url = URL(self._ring.advance())
        self.__dict__["_failover_transport"] = value

    async def _on_connected(self) -> None:
        self._restored = False
        await super()._on_connected()  # connects, then restores every channel
        self._restored = True

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> AbstractRobustChannel:
        """A new channel; refused while the connection is lost or its channels are not restored."""
        transport = self.transport
        if not self._restored or transport is None or transport.connection.is_closed:
            raise RuntimeError("Connection is not ready")
        return super().channel(
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )
