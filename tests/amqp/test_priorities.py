"""Job priorities on RabbitMQ itself: classic x-max-priority queues and quorum queues."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import pytest

from amqp_worker import AMQPWorker, Job, TopologyConflict
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.brokertools import BROKER_URL, delete_topology

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

GUARD_S = 30.0


async def broker_major_version() -> int:
    connection = await aio_pika.connect(BROKER_URL)
    try:
        version = connection.transport.connection.server_properties["version"]  # type: ignore[union-attr]
    finally:
        await connection.close()
    return int(str(version).split(".")[0])


async def run_in_order(worker: AMQPWorker, queue: str, priorities: list[int | None]) -> list[int]:
    order: list[int] = []

    async def work(args: dict[str, Any]) -> None:
        order.append(int(args["n"]))

    worker.register("work", work)
    for n, priority in enumerate(priorities):
        await worker.perform(Job(handler="work", queue=queue, args={"n": n}, priority=priority))
    async with worker:
        async with asyncio.timeout(GUARD_S):
            while len(order) < len(priorities):  # noqa: ASYNC110 - the handler sets nothing
                await asyncio.sleep(0.02)
    return order


async def test_max_priority_on_an_existing_queue_without_it_is_a_clear_conflict() -> None:
    name = f"awtest-prio-{uuid.uuid4().hex[:8]}"
    queue = "jobs"
    plain = AMQPWorker(BROKER_URL, name=name, queues=[queue])
    try:
        async with plain:
            pass  # declares the work queue without x-max-priority
        ranked = AMQPWorker(BROKER_URL, name=name, queues=[queue], max_priority=9)
        with pytest.raises(TopologyConflict, match="x-max-priority"):
            await ranked.start()
        await ranked.stop()
    finally:
        await delete_topology(Topology(name=name), [queue])


async def test_quorum_queues_on_rabbitmq_4_run_high_priorities_first() -> None:
    if await broker_major_version() < 4:
        pytest.skip("quorum queues have no priorities before RabbitMQ 4.0")
    name = f"awtest-prio-{uuid.uuid4().hex[:8]}"
    queue = "jobs"
    worker = AMQPWorker(
        BROKER_URL, name=name, queues=[queue], queue_type="quorum", max_concurrency=1, prefetch=1
    )
    try:
        # 4.x: priority 5 and up is "high", the rest "normal"; FIFO within each.
        order = await run_in_order(worker, queue, [None, 9, 2, 5, 0])
    finally:
        await delete_topology(Topology(name=name, queue_type="quorum"), [queue])
    assert order == [1, 3, 0, 2, 4]
