"""The cancellations stream's name, arguments and record, without a broker."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import pytest

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


async def test_a_start_held_by_an_unread_stream_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cancels, "SYNC_WARN_S", 0.01)
    broker = Broker(AMQPSettings(name="app"))  # never connects: nothing here needs it
    reader = cancels.RabbitCancels(broker, CancelBook())
    caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.05, caught_up.set_result, None)
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        await reader._until_read(caught_up)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings
    assert all(
        m.startswith("the cancellations stream app.cancels is not read up to now after")
        for m in warnings
    )
