"""amqp_worker.testing.delete_topology: a user's test suite cleans up what its workers declared."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import aiormq.exceptions
import pytest

from amqp_worker import AMQPSettings, AMQPWorker, Job, PermanentError
from amqp_worker.testing import delete_topology
from tests.harness.brokertools import BROKER_URL, queue_state

pytestmark = pytest.mark.broker


async def exchange_exists(name: str) -> bool:
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        try:
            await channel.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True


async def test_everything_a_worker_declared_is_gone_jobs_included() -> None:
    # A name of its own: this test deletes the shared parts (delay topology, exchanges) too.
    name = f"awtest-teardown-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(BROKER_URL, name=name, queues=["emails", "reports"])
    parked = asyncio.Event()
    worker.hooks.on_parked(lambda event: parked.set())

    async def boom(args: dict[str, object]) -> None:
        raise PermanentError("parked on purpose")

    worker.register("boom", boom)
    async with worker:
        await worker.perform(Job(queue="emails", handler="boom"))
        await worker.perform_in(Job(queue="reports", handler="boom"), 3600)
        await asyncio.wait_for(parked.wait(), 10)
    topology = worker.topology
    queues = [n for q in ("emails", "reports") for n in topology.queues_of(q)]
    queues += [*topology.delay_queues(), topology.schedule_queue, topology.schedule_status_queue]
    assert await queue_state(topology.failed_queue("emails")) == (1, 0)

    await delete_topology(worker)

    for queue in queues:
        assert await queue_state(queue) is None, queue
    for exchange in topology.exchanges():
        assert not await exchange_exists(exchange), exchange
    # Twice is fine, from settings alone too.
    await delete_topology(AMQPSettings(url=BROKER_URL, name=name, queues=("emails",)))


async def test_only_the_queues_named_and_only_a_worker_or_settings() -> None:
    name = f"awtest-teardown-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(BROKER_URL, name=name, queues=["kept", "gone"])
    try:
        for queue in ("kept", "gone"):
            await worker.perform(Job(queue=queue, handler="h"))
        await worker.stop()
        await delete_topology(worker, ["gone"])
        assert await queue_state(worker.topology.work_queue("gone")) is None
        assert await queue_state(worker.topology.work_queue("kept")) == (1, 0)
    finally:
        await delete_topology(worker)
    with pytest.raises(TypeError, match="AMQPWorker or AMQPSettings"):
        await delete_topology(BROKER_URL)  # type: ignore[arg-type]
