"""Quorum queues: nothing is dropped past a delivery limit, and queues of the previous version still work."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aio_pika
import pytest

from amqp_worker import AMQPWorker, FailureReason, Job
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.brokertools import BROKER_URL, delete_topology

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

QUEUE = "q"


async def test_a_job_past_the_delivery_limit_lands_in_the_failed_queue_with_the_reason() -> None:
    # RabbitMQ 4.x applies a limit of 20 by default and drops what passes it;
    # 3.10 here has none, so set a small explicit one to take the same path.
    name = f"awtest-limit-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(
        BROKER_URL, name=name, queues=[QUEUE], queue_type="quorum", delivery_limit=2
    )
    try:
        job = Job(handler="h", queue=QUEUE, args={"n": 1})
        await worker.perform(job)
        # A publisher declares the work queue only; the dead-letter target must exist.
        await worker._broker.declarations.ensure_failed_queue(QUEUE)
        async with await aio_pika.connect(BROKER_URL) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(worker.topology.work_queue(QUEUE), passive=True)
            for _ in range(3):  # a consumer that keeps handing it back
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                # reject: it counts as a delivery on every version (4.3 no longer
                # counts a nack).
                await message.reject(requeue=True)
        for _ in range(100):
            parked = await worker.failed.list()
            if parked:
                break
            await asyncio.sleep(0.05)
        [record] = parked
        assert record.id == job.id
        assert record.reason is FailureReason.DELIVERY_LIMIT
        assert record.job == job.model_copy(update={"enqueued_at": record.job.enqueued_at})  # type: ignore[union-attr]
    finally:
        await worker.stop()
        await delete_topology(Topology(name=name), [QUEUE])


async def test_a_quorum_queue_of_the_previous_version_is_used_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"awtest-legacy-{uuid.uuid4().hex[:8]}"
    old = Topology(name=name, queue_type="quorum")
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        # What the previous version declared: quorum, nothing else.
        for queue_name in (old.work_queue(QUEUE), old.due_queue(QUEUE)):
            await channel.declare_queue(
                queue_name, durable=True, arguments={"x-queue-type": "quorum"}
            )
    worker = AMQPWorker(BROKER_URL, name=name, queues=[QUEUE], queue_type="quorum")
    ran = asyncio.Event()

    async def h(args: dict[str, int]) -> None:
        ran.set()

    worker.register("h", h)
    caplog.set_level(logging.WARNING, logger="amqp_worker")
    try:
        async with worker:
            await worker.perform(Job(handler="h", queue=QUEUE))
            await asyncio.wait_for(ran.wait(), 30)
        warnings = [r.getMessage() for r in caplog.records if "older amqp-worker" in r.getMessage()]
        assert any(old.work_queue(QUEUE) in w and "rabbitmqctl set_policy" in w for w in warnings)
        assert any(old.due_queue(QUEUE) in w for w in warnings)
    finally:
        await worker.stop()
        await delete_topology(Topology(name=name), [QUEUE])
