"""Test helpers that talk to the shared RabbitMQ directly, with plain aio-pika."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage

from amqp_worker._rabbitmq import teardown
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.topology import Topology

BROKER_URL = os.environ.get("AMQP_WORKER_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/")

_BROKER = urlsplit(BROKER_URL)
#: ``host:port`` of the test broker, as amqp-worker names it (``amqp://HOST:PORT vhost=/``):
#: 127.0.0.1:5672 for the shared broker, another port for scripts/test-rabbitmq4's node.
BROKER_ADDRESS = f"{_BROKER.hostname}:{_BROKER.port or 5672}"


def broker_url(vhost: str = "", user: str = "guest", password: str = "guest") -> str:
    """The test broker's URL with other credentials or another vhost (``""``: the default one)."""
    return f"{_BROKER.scheme}://{user}:{password}@{BROKER_ADDRESS}/{quote(vhost, safe='')}"


async def delete_queues(names: Iterable[str], url: str = BROKER_URL) -> None:
    """Delete queues (messages and all); missing ones are fine."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def delete_topology(topology: Topology, queues: Iterable[str] = ()) -> None:
    """Delete everything a worker name declared, with amqp_worker.testing's own clean-up."""
    await teardown.delete_topology(AMQPSettings(url=BROKER_URL), queues, topology=topology)


async def queue_state(name: str, url: str = BROKER_URL) -> tuple[int, int] | None:
    """(ready messages, consumers) of a queue, or None if it does not exist."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0


async def accepts_declaration(name: str, arguments: dict[str, Any], url: str = BROKER_URL) -> bool:
    """Whether RabbitMQ takes a durable re-declaration of the existing queue ``name``.

    It refuses one whose arguments differ from the queue's (its type among them),
    so this tells a quorum queue from a classic one without the management API.
    """
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, passive=True)  # must exist: never create it here
        try:
            await channel.declare_queue(name, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed:
            return False
        return True


async def drain(name: str, url: str = BROKER_URL) -> list[dict[str, Any]]:
    """Take every message out of a queue; return body and headers of each."""
    out: list[dict[str, Any]] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while True:
            message: AbstractIncomingMessage | None = await queue.get(no_ack=True, fail=False)
            if message is None:
                return out
            out.append(
                {
                    "body": message.body,
                    "headers": dict(message.headers or {}),
                    "message_id": message.message_id,
                    "delivery_mode": message.delivery_mode,
                }
            )


async def publish_raw(
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any] | None = None,
    url: str = BROKER_URL,
) -> None:
    """Publish bytes as any other client would, confirmed."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(
            aio_pika.Message(
                body,
                headers=headers,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key,
        )


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q ARGS`` against the shared broker (users, vhosts, permissions)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
