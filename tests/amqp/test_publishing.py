"""Publishing against a real RabbitMQ: durable, persistent, confirmed, never silent."""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime

import aio_pika
import pytest

from amqp_worker import (
    AMQPWorker,
    BrokerUnavailable,
    ConfigurationError,
    Job,
    JobTooLarge,
    PublishError,
    PublishNacked,
    PublishReturned,
    TopologyConflict,
)
from amqp_worker._rabbitmq.messages import job_message
from tests.amqp.conftest import Workers
from tests.harness.broker_node import BrokerNode, rabbitmq_available
from tests.harness.brokertools import BROKER_URL, delete_queues, drain, queue_state

pytestmark = pytest.mark.broker


async def test_perform_without_start_declares_the_queue_and_keeps_the_job(
    workers: Workers,
) -> None:
    publisher = workers()
    job = Job(handler="send_email", queue=workers.queue, args={"user_id": 123})
    assert await publisher.perform(job) == job.id
    await publisher.stop()  # closes the lazily opened connection
    assert await queue_state(workers.topology.work_queue(workers.queue)) == (1, 0)
    [message] = await drain(workers.topology.work_queue(workers.queue))
    assert json.loads(message["body"])["args"] == {"user_id": 123}
    assert message["message_id"] == job.id
    assert message["delivery_mode"] == aio_pika.DeliveryMode.PERSISTENT
    assert message["headers"]["aw-attempt"] == 0


async def test_message_properties(workers: Workers) -> None:
    publisher = workers()
    job = Job(handler="h", queue=workers.queue)
    await publisher.perform(job)
    await publisher.stop()
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            workers.topology.work_queue(workers.queue), passive=True
        )
        message = await queue.get(no_ack=True)
    assert message.content_type == "application/json"
    assert message.type == "h"
    assert message.message_id == job.id
    assert isinstance(message.timestamp, datetime)
    assert abs((message.timestamp - datetime.now(UTC)).total_seconds()) < 120


async def test_perform_many_pipelines_confirms(workers: Workers) -> None:
    publisher = workers()
    jobs = [Job(handler="h", queue=workers.queue, args={"n": n}) for n in range(300)]
    ids = await publisher.perform_many(jobs)
    await publisher.stop()
    assert ids == [job.id for job in jobs]
    assert await queue_state(workers.topology.work_queue(workers.queue)) == (300, 0)


async def test_a_returned_message_raises(workers: Workers) -> None:
    publisher = workers()
    await publisher._broker.declarations.ensure_work_queue(workers.queue)
    with pytest.raises(PublishReturned, match="unroutable"):
        await publisher._broker.publish(
            publisher.topology.exchange, "no-such-binding", job_message(Job(handler="h"))
        )
    await publisher.stop()


async def test_a_nacked_message_raises(workers: Workers) -> None:
    full = await workers.full_queue(0)
    publisher = workers()
    with pytest.raises(PublishNacked, match="refused"):
        await publisher._broker.publish("", full, job_message(Job(handler="h")))
    await publisher.stop()


async def test_an_unreachable_broker_is_a_typed_error_without_credentials() -> None:
    worker = AMQPWorker(
        "amqp://user:s3cret-pw@127.0.0.1:1/", publish_timeout_s=0.5, reconnect_interval_s=0.1
    )
    with pytest.raises(BrokerUnavailable) as info:
        await worker.perform(Job(handler="h"))
    assert "s3cret-pw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)
    with pytest.raises(BrokerUnavailable):
        await worker.start()
    await worker.stop()


async def test_a_conflicting_queue_is_a_clear_error(workers: Workers) -> None:
    name = workers.topology.work_queue(workers.queue)
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-max-length": 10})
    worker = workers()
    with pytest.raises(TopologyConflict, match="x-max-length") as info:
        await worker.perform(Job(handler="h", queue=workers.queue))
    assert repr(name) in str(info.value)
    with pytest.raises(TopologyConflict, match="x-max-length"):
        await worker.start()
    # The worker is still usable for other queues.
    other = f"{workers.queue}.other"
    await worker.perform(Job(handler="h", queue=other))
    await worker.stop()
    await delete_queues([workers.topology.work_queue(other)])


@pytest.mark.parametrize(
    "queue", ["dots.in.the.name", "hash#and,comma", "space and:colon@at", "slash/plus+minus-"]
)
async def test_any_legal_queue_name_routes_exactly(workers: Workers, queue: str) -> None:
    name = f"{workers.queue}.{queue}"
    worker = workers(queues=[name])
    done = asyncio.Event()
    got: list[str] = []

    async def h(args: dict[str, str]) -> None:
        got.append(args["q"])
        done.set()

    worker.register("h", h)
    async with worker:
        # A sibling queue whose name a wildcard would match must not receive it.
        await worker.perform(
            Job(handler="h", queue=f"{workers.queue}.dots.in.other", args={"q": "x"})
        )
        await worker.perform(Job(handler="h", queue=name, args={"q": name}))
        await asyncio.wait_for(done.wait(), 20)
    assert got == [name]
    await delete_queues([workers.topology.work_queue(f"{workers.queue}.dots.in.other")])


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="queues"):
        AMQPWorker(BROKER_URL, queues=[])
    with pytest.raises(ConfigurationError, match="url"):
        AMQPWorker("http://user:pw@host/")
    with pytest.raises(ConfigurationError, match="amqps"):
        AMQPWorker(BROKER_URL, ssl_context=ssl.create_default_context())


def test_repr_never_shows_credentials() -> None:
    worker = AMQPWorker("amqp://user:s3cret-pw@rabbit.internal:5672/prod", queues=["a"])
    assert "s3cret-pw" not in repr(worker)
    assert "s3cret-pw" not in repr(worker.settings)
    assert "rabbit.internal:5672 vhost=prod" in repr(worker)


@pytest.mark.timeout(90)
async def test_a_job_over_the_brokers_max_message_size_is_job_too_large() -> None:
    # RabbitMQ 4.x refuses bodies over 16 MiB by default (3.x: 128 MiB) by closing
    # the channel: perform raises JobTooLarge, not aiormq's error, and goes on working.
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server and root to start a private node")
    node = BrokerNode(extra_config="max_message_size = 65536\n")
    await asyncio.to_thread(node.start)
    try:
        worker = AMQPWorker(node.url, name="awtest-size", queues=["q"], publish_timeout_s=10)
        with pytest.raises(JobTooLarge, match="over the broker's max_message_size") as info:
            await worker.perform(Job(handler="h", queue="q", args={"blob": "x" * 100_000}))
        assert "guest" not in str(info.value)
        assert await worker.perform(Job(handler="h", queue="q")) is not None
        assert await queue_state(worker.topology.work_queue("q"), url=node.url) == (1, 0)
        # In one batch, the broker closes the channel under every publish: only the
        # oversized job fails; the others beside it are published again.
        small = [Job(handler="h", queue="q", args={"i": i}) for i in range(2)]
        big = Job(handler="h", queue="q", args={"blob": "x" * 100_000})
        with pytest.raises(PublishError) as batch:
            await worker.perform_many([small[0], big, small[1]])
        assert batch.value.job_ids == (big.id,)
        assert isinstance(batch.value.__cause__, JobTooLarge)
        # The first small job may have been routed with its confirm lost in the close:
        # published again, it is a duplicate (at least once), never a loss.
        ready, _ = await queue_state(worker.topology.work_queue("q"), url=node.url)
        assert 3 <= ready <= 4
        await worker.stop()
    finally:
        await asyncio.to_thread(node.close)
