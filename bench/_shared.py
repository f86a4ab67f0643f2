"""What the benchmarks share: the environment a run reports, and cleanup after it."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import aio_pika
import aiormq.exceptions
import pydantic
from aio_pika.abc import AbstractChannel

import amqp_worker

T = TypeVar("T")


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


async def on_each(
    url: str, names: Iterable[str], action: Callable[[AbstractChannel, str], Awaitable[T]]
) -> dict[str, T | None]:
    """``action(channel, name)`` for each name, on one connection; None where the broker refused.

    A refusal (a 404 for a missing queue, say) closes the channel, so the next
    name gets a new one.
    """
    results: dict[str, T | None] = {}
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            try:
                results[name] = await action(channel, name)
            except aiormq.exceptions.AMQPError:
                results[name] = None
                channel = await connection.channel()
    finally:
        await connection.close()
    return results


async def delete_all(url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Delete ``queues`` then ``exchanges``; ones that do not exist are skipped."""
    await on_each(url, queues, lambda channel, queue: channel.queue_delete(queue))
    await on_each(url, exchanges, lambda channel, exchange: channel.exchange_delete(exchange))
