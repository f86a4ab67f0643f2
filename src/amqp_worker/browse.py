"""Reading a queue without taking anything from it: consume unacked, then close the channel.

RabbitMQ puts every delivered-but-unacked message back where it was when its
channel closes, so a reader that acks nothing leaves the queue exactly as it
found it; one that acks some (a retry, a purge) removes just those. A
consumer with no prefetch limit reads 10,000 messages in well under a
second; ``basic.get``, one round trip per message, took 7 s.

While a message is held it is not delivered to anyone else: a delayed job
held from a delay queue is released (and moves on) when the read ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

__all__ = ["IDLE_S", "Visit", "browse"]

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
