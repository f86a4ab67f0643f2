"""The cancellations stream's name, arguments and record, without a broker."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import pytest
from aio_pika import Message

from amqp_worker._core.cancels import CancelBook
from amqp_worker._rabbitmq import cancels
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.cancels import cancel_record
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.topology import Topology


def test_the_cancellations_stream_and_its_record() -> None:
    assert Topology(name="app").cancels_stream == "app.cancels"
    at = datetime(2026, 1, 2, tzinfo=UTC)
    assert json.loads(cancel_record("j1", at)) == {
        "job_id": "j1",
        "cancelled_at_ms": round(at.timestamp() * 1000),
    }


def test_the_stream_is_bounded_by_cancel_ttl_s_and_cancels_max_bytes() -> None:
    settings = AMQPSettings(cancel_ttl_s=3600, cancels_max_bytes=32 * 1024**2)
    arguments = settings.topology.results_stream_arguments(
        settings.cancel_ttl_s, settings.cancels_max_bytes
    )
    assert arguments["x-queue-type"] == "stream"
    assert arguments["x-max-age"] == "3600s"
    assert arguments["x-max-length-bytes"] == 32 * 1024**2
    assert AMQPSettings().cancel_ttl_s == 7 * 24 * 3600


async def test_a_start_held_by_an_unread_stream_says_so_and_writes_its_marker_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cancels, "SYNC_WARN_S", 0.01)
    broker = Broker(AMQPSettings(name="app"))  # never connects: publish is stood in for
    reader = cancels.RabbitCancels(broker, CancelBook())
    caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    markers: list[tuple[str, str, bytes]] = []

    async def publish(exchange: str, routing_key: str, message: Message) -> None:
        markers.append((exchange, message.message_id or "", message.body))
        if len(markers) == 3:  # the listener reads the third: RabbitMQ lost its place twice
            caught_up.set_result(None)

    monkeypatch.setattr(broker, "publish", publish)
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        await reader._until_read(caught_up, "t0k3n")
    assert markers == [("app.cancels", "sync:t0k3n", b'{"sync": "t0k3n"}')] * 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert all(
        m.startswith("the cancellations stream app.cancels is not read up to now after")
        for m in warnings
    )
