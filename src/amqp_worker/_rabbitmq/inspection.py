"""Read-only looks at the broker: what a queue holds, without taking or creating anything.

- :class:`QueueInspector`: a passive ``queue.declare`` answers whether a queue
  exists, its ready messages and consumers, and never creates anything. A
  failed one (404) closes its channel, so the inspector opens a new channel
  after each miss. It uses a plain (not robust) connection: a robust channel
  would try to reopen itself after the 404. ``peek`` reads one message and
  puts it back.
- :func:`browse`: every message of a queue, in order, without taking any.
  RabbitMQ puts every delivered-but-unacked message back where it was when
  its channel closes, so a reader that acks nothing leaves the queue exactly
  as it found it; one that acks some (a retry, a purge) removes just those.
  A consumer with no prefetch limit takes the messages in one stream, where
  ``basic.get`` costs one round trip each (bench/README.md has the figures).
  While a message is held it is not delivered to anyone else: a delayed job
  held from a delay queue is released (and moves on) when the read ends.
- :func:`unacked_counts`: AMQP cannot tell unacknowledged counts;
  ``rabbitmqctl list_queues`` can, when it is installed here and the broker
  is on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from amqp_worker._rabbitmq.connect import dial
from amqp_worker._rabbitmq.failover import node_of
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.errors import BrokerUnavailable

__all__ = ["IDLE_S", "QueueInspector", "QueueStat", "Visit", "browse", "unacked_counts", "vhost_of"]

#: How long rabbitmqctl may take before its numbers are given up on.
RABBITMQCTL_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class QueueStat:
    """What a passive declare says about a queue."""

    ready: int
    consumers: int


class QueueInspector:
    """One connection for passive declares; ``async with QueueInspector(settings) as inspector:``."""

    def __init__(self, settings: AMQPSettings) -> None:
        self.settings = settings
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, retrying for up to ``publish_timeout_s`` (the CLI's ``--timeout``).

        Raises :class:`BrokerUnavailable` when that runs out.
        """
        self._connection = await dial(
            self.settings,
            self.settings.publish_timeout_s,
            robust=False,
            connection_name="amqp-worker cli",
        )

    @property
    def node(self) -> str:
        """The node this inspector is connected to, described without credentials."""
        return node_of(self._connection) if self._connection is not None else "?"

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def _open_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            if self._connection is None:
                raise BrokerUnavailable(f"not connected to {self.settings.broker}")
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def _passive(self, name: str) -> AbstractQueue | None:
        """Queue ``name`` declared passively; None if it does not exist."""
        channel = await self._open_channel()
        try:
            return await channel.declare_queue(name, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            self._channel = None  # the broker closed it
            return None

    async def stat(self, name: str) -> QueueStat | None:
        """Ready messages and consumers of queue ``name``; None if it does not exist."""
        queue = await self._passive(name)
        if queue is None:
            return None
        result = queue.declaration_result
        return QueueStat(result.message_count or 0, result.consumer_count or 0)

    async def peek(self, name: str) -> bytes | None:
        """The body of the first message of queue ``name``, left in place; None if none."""
        queue = await self._passive(name)
        if queue is None:
            return None
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        body = message.body
        await message.nack(requeue=True)
        return body


def _is_local(host: str | None) -> bool:
    if host is None:
        return False
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return True
    return host in (socket.gethostname(), socket.getfqdn())


def vhost_of(settings: AMQPSettings) -> str:
    """The vhost the URL names (``/`` if none)."""
    path = urlsplit(settings.url.get_secret_value()).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def unacked_counts(settings: AMQPSettings) -> dict[str, int] | None:
    """Unacknowledged messages per queue, from ``rabbitmqctl``; None where that can't work.

    Only for a broker on this machine: a local ``rabbitmqctl`` would otherwise
    describe another node.
    """
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None or not _is_local(urlsplit(settings.url.get_secret_value()).hostname):
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            rabbitmqctl,
            "-q",
            "list_queues",
            "-p",
            vhost_of(settings),
            "name",
            "messages_unacknowledged",
            "--formatter",
            "json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RABBITMQCTL_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    except asyncio.CancelledError:
        # Ctrl-C of `queues --watch`: do not leave an Erlang VM starting up behind.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        return None
    try:
        rows = json.loads(out or b"[]")
        return {
            str(row["name"]): int(row["messages_unacknowledged"])
            for row in rows
            if isinstance(row, dict)
        }
    except (ValueError, KeyError, TypeError):
        return None


# -- reading every message -------------------------------------------------------

#: How long a read waits for the next message before it takes the queue as read.
IDLE_S = 1.0

#: The prefetch field is 16 bits; a larger window is sent as 0 (no limit).
_MAX_PREFETCH = 65535

#: What ``browse`` does with each message: True acks (removes) it, False leaves it.
Visit = Callable[[AbstractIncomingMessage], Awaitable[bool]]


async def browse(
    open_channel: Callable[[], Awaitable[AbstractChannel]],
    queue: str,
    visit: Visit,
    limit: int | None = None,
) -> int | None:
    """Show the messages of ``queue`` to ``visit``, in order, once; how many were shown.

    Reads the messages there when it starts (the count a passive declare
    gives), or the first ``limit`` of them: messages that arrive meanwhile
    wait for the next read. Stops early when nothing arrives for
    :data:`IDLE_S` (another reader holds the rest). Returns None if the
    queue does not exist; declared passively, so reading never creates one.
    """
    channel = await open_channel()
    try:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except amqp_errors.ChannelNotFoundEntity:
            return None  # the broker closed the channel on the 404
        count = declared.declaration_result.message_count or 0
        wanted = count if limit is None else min(count, limit)
        if wanted == 0:
            return 0
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        # Nothing is acked until ``visit`` says so: the prefetch must cover
        # every message wanted, or the broker would stop sending.
        await channel.set_qos(prefetch_count=wanted if wanted <= _MAX_PREFETCH else 0)
        await declared.consume(inbox.put, no_ack=False)
        seen = 0
        while seen < wanted:
            if inbox.empty():
                try:
                    message = await asyncio.wait_for(inbox.get(), IDLE_S)
                except TimeoutError:
                    break
            else:
                message = inbox.get_nowait()  # most are here already: no timer per message
            seen += 1
            if await visit(message):
                await message.ack()
        return seen
    finally:
        # Every unacked message goes back to its place in the queue.
        if not channel.is_closed:
            await channel.close()
