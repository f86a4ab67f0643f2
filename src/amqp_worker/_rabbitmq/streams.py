"""Whether a stream exists yet, so that a new one is left alone before its first publish.

Fix: a publish that reaches a stream RabbitMQ has *just* created, before the
stream's writer is registered, crashes the publishing channel on RabbitMQ
3.10 and 4.0 (``function_clause`` in ``osiris_writer:write``, the writer
still ``none``), and the crashed channel ends its whole connection with 541
INTERNAL_ERROR: every job in flight on it comes back and runs again. Seen on
the results and cancellations streams of a new worker name. So the results
and cancels code asks :func:`stream_exists` before it declares a stream, and
waits :data:`SETTLE_S` after declaring one that did not exist.

The question goes over a short connection of its own: a passive declare of
a missing queue (404) closes its channel, and on the worker's connection the
channel number, reused at once, left RabbitMQ 4.0 answering a
``channel.close`` where a ``channel.open`` was expected. When it cannot be
asked (a connection the user gave, a refused login, no answer), the stream
is taken to exist: no wait, as before this fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from amqp_worker.errors import AmqpWorkerError

from .broker import Broker
from .connect import dial

__all__ = [
    "PROBE_TIMEOUT_S",
    "SETTLE_S",
    "settle_new_stream",
    "stream_exists",
    "stream_readable",
]

logger = logging.getLogger("amqp_worker")

#: How long a stream this process created is left alone before the first publish.
SETTLE_S = 1.0
#: How long the probe connection may take to answer.
PROBE_TIMEOUT_S = 5.0


async def _probe(broker: Broker, name: str) -> AbstractConnection | None:
    """A short connection of its own to ask about stream ``name``; None if there is none."""
    if broker.given_connection is not None:
        return None
    try:
        return await dial(
            broker.settings,
            PROBE_TIMEOUT_S,
            robust=False,
            ssl_context=broker.ssl_context,
            connection_name="amqp-worker stream probe",
        )
    except (AmqpWorkerError, OSError, amqp_errors.AMQPError) as exc:
        logger.debug("could not ask about stream %s: %s", name, exc)
        return None


async def stream_exists(broker: Broker, name: str) -> bool:
    """False only if RabbitMQ says there is no queue ``name`` (see the module docstring)."""
    connection = await _probe(broker, name)
    if connection is None:
        return True
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_queue(name, passive=True)
        return True
    except amqp_errors.ChannelNotFoundEntity:
        return False
    except (AmqpWorkerError, OSError, amqp_errors.AMQPError) as exc:
        logger.debug("could not ask whether stream %s exists: %s", name, exc)
        return True
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def settle_new_stream() -> None:
    """Wait :data:`SETTLE_S`: a stream just created takes no publish before its writer is up."""
    await asyncio.sleep(SETTLE_S)


async def stream_readable(broker: Broker, name: str) -> bool:
    """True if a consumer on stream ``name`` is answered now; asked on a probe connection.

    Fix: just after a node restart, RabbitMQ 4.x answers a consume of a
    stream whose member is not back yet by closing the whole *connection*
    (506 RESOURCE_ERROR "Stream not found"): a stream reader that asked on
    the worker's connection, again and again, took the worker's jobs down
    with it each time. A reader whose consume failed asks here before it
    consumes again. True as well when it cannot be asked.
    """
    connection = await _probe(broker, name)
    if connection is None:
        return True
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(name, ensure=False)
        tag = await queue.consume(
            _ignore, arguments={"x-stream-offset": "next"}, timeout=PROBE_TIMEOUT_S
        )
        await queue.cancel(tag)
        return True
    except (AmqpWorkerError, OSError, TimeoutError, amqp_errors.AMQPError) as exc:
        logger.debug("stream %s is not readable yet: %s", name, exc)
        return False
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def _ignore(message: AbstractIncomingMessage) -> None:
    """A probe's consumer: its deliveries go back when its connection closes."""
