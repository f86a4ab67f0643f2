"""streams.py: whether a stream exists is asked on a probe connection; a new one settles."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from amqp_worker import AMQPWorker
from amqp_worker._rabbitmq import results as results_module
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.streams import stream_exists, stream_readable
from amqp_worker.testing import delete_topology
from tests.harness.brokertools import BROKER_URL

pytestmark = [pytest.mark.broker]


Probe = Callable[[Broker, str], Awaitable[bool]]


@pytest.mark.parametrize("probe", [stream_exists, stream_readable])
async def test_a_probe_says_false_for_a_missing_stream_and_true_for_one_there(probe: Probe) -> None:
    name = f"awtest-streams-{uuid.uuid4().hex[:8]}"
    broker = Broker(AMQPSettings(url=BROKER_URL, name=name))
    try:
        assert not await probe(broker, f"{name}.results")
        connection = await aio_pika.connect(BROKER_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"{name}.results", durable=True, arguments={"x-queue-type": "stream"}
            )
            assert await probe(broker, f"{name}.results")
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await broker.close()


async def test_a_given_connection_is_never_probed() -> None:
    connection = await aio_pika.connect_robust(BROKER_URL)
    async with connection:
        broker = Broker(AMQPSettings(url=BROKER_URL), connection=connection)
        assert await stream_exists(broker, f"awtest-missing-{uuid.uuid4().hex[:8]}")


async def test_a_results_stream_this_process_creates_settles_before_its_first_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[bool] = []

    async def settle() -> None:
        slept.append(True)

    monkeypatch.setattr(results_module, "settle_new_stream", settle)
    name = f"awtest-streams-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(BROKER_URL, name=name, queues=["q"])
    try:
        await worker._results.ensure()  # a new name: created here
        assert slept == [True]
        again = AMQPWorker(BROKER_URL, name=name, queues=["q"])
        await again._results.ensure()  # it exists now: no wait
        assert slept == [True]
        await again.stop()
    finally:
        await worker.stop()
        await delete_topology(worker)
