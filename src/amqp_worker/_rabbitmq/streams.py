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

from amqp_worker.errors import AmqpWorkerError

from .broker import Broker
from .connect import dial

__all__ = ["PROBE_TIMEOUT_S", "SETTLE_S", "settle_new_stream", "stream_exists"]

logger = logging.getLogger("amqp_worker")

#: How long a stream this process created is left alone before the first publish.
SETTLE_S = 1.0
#: How long the probe connection may take to answer.
PROBE_TIMEOUT_S = 5.0


async def stream_exists(broker: Broker, name: str) -> bool:
    """False only if RabbitMQ says there is no queue ``name`` (see the module docstring)."""
    if broker.given_connection is not None:
        return True
    try:
        connection = await dial(
            broker.settings,
            PROBE_TIMEOUT_S,
            robust=False,
            ssl_context=broker.ssl_context,
            connection_name="amqp-worker stream probe",
        )
    except (AmqpWorkerError, OSError, amqp_errors.AMQPError) as exc:
        logger.debug("could not ask whether stream %s exists: %s", name, exc)
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
