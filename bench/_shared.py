"""What the benchmarks share: the environment a run reports, and cleanup after it."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from typing import Any

import aio_pika
import aiormq.exceptions
import pydantic

import amqp_worker


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


async def environment(url: str) -> dict[str, Any]:
    """Versions, CPUs, load and date, for the report of a run against ``url``."""
    return {
        "python": platform.python_version(),
        "aio_pika": aio_pika.__version__,
        "pydantic": pydantic.VERSION,
        "amqp_worker": amqp_worker.__version__,
        "rabbitmq": await broker_version(url),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
    }


def describe(env: dict[str, Any]) -> str:
    """One line on an :func:`environment`, for the top of a report."""
    return (
        f"Python {env['python']}, aio-pika {env['aio_pika']}, pydantic {env['pydantic']}, "
        f"amqp-worker {env['amqp_worker']}, RabbitMQ {env['rabbitmq']}, {env['cpus']} CPUs, "
        f"load {env['load_average_1m']} at the end"
    )


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
