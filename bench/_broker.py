"""Broker helpers the benchmarks share: the server's version, and cleanup after a run."""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
import aiormq.exceptions


async def broker_version(url: str) -> str:
    """The RabbitMQ version the server announces, or "unknown"."""
    connection = await aio_pika.connect(url)
    try:
        transport = connection.transport
        if transport is None:
            return "unknown"
        version = transport.connection.server_properties.get("version", b"unknown")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()


async def delete_all(url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Delete ``queues`` then ``exchanges``; ones that do not exist are skipped."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except aiormq.exceptions.AMQPError:
                channel = await connection.channel()  # the error closed the channel
        for exchange in exchanges:
            try:
                await channel.exchange_delete(exchange)
            except aiormq.exceptions.AMQPError:
                channel = await connection.channel()
    finally:
        await connection.close()
