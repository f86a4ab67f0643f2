"""Declaring a stream so that it can be published to at once.

Fix: a publish that reaches a stream RabbitMQ has *just* created, before the
stream's writer is registered, crashes the publishing channel on RabbitMQ
4.0 and 3.10 (``function_clause`` in ``osiris_writer:write``, the writer
still ``none``), and a crashed channel ends its whole connection with
541 INTERNAL_ERROR: every job in flight on it comes back and runs again.
Seen on the results stream of a new worker name (bench/workflows.py on the
4.x pass of CI). A stream this declaration creates is given
:data:`SETTLE_S` before anyone publishes to it; an existing one costs one
passive declare more, once per process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel as UnderlyingChannel

from .broker import Broker

__all__ = ["SETTLE_S", "declare_stream"]

#: How long a stream this process created is left alone before the first publish.
SETTLE_S = 1.0


async def declare_stream(
    broker: Broker, channel: UnderlyingChannel | None, name: str, arguments: dict[str, Any]
) -> UnderlyingChannel:
    """Declare the stream ``name`` on ``channel`` (a new errand channel if None or closed).

    Returns the channel it used, open (kept by the caller for the next
    declaration). Raises what ``queue.declare`` raises (a 406 for other
    arguments, a 404 for a stream RabbitMQ reports unreachable).
    """
    if channel is None or channel.is_closed:
        channel = await broker.plain_channel()
    try:
        await channel.queue_declare(name, passive=True)
        created = False
    except amqp_errors.ChannelNotFoundEntity:
        created = True  # the 404 closed the channel
        channel = await broker.plain_channel()
    await channel.queue_declare(name, durable=True, arguments=arguments)
    if created:
        await asyncio.sleep(SETTLE_S)
    return channel
