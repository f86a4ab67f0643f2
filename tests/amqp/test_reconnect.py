"""Broker restarts and outages, on a private RabbitMQ node this module starts and kills.

Never the shared broker: see tests/harness/broker_node.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from amqp_worker import AMQPWorker, BrokerUnavailable, Job
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.broker_node import BrokerNode, rabbitmq_available
from tests.harness.brokertools import queue_state

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root to start a private node")
    with BrokerNode() as started:
        yield started


def make(node: BrokerNode, queue: str, **options: Any) -> AMQPWorker:
    options.setdefault("publish_timeout_s", 60)
    return AMQPWorker(
        node.url,
        name="awtest-reconnect",
        queues=[queue],
        reconnect_interval_s=0.2,
        heartbeat_s=2,
        **options,
    )


async def test_a_consumer_survives_a_broker_restart(
    node: BrokerNode, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"q.{uuid.uuid4().hex[:8]}"
    worker = make(node, queue)
    seen: list[int] = []
    arrived = asyncio.Event()

    async def h(args: dict[str, int]) -> None:
        seen.append(args["n"])
        arrived.set()

    worker.register("h", h)
    async with worker:
        await worker.perform(Job(handler="h", queue=queue, args={"n": 1}))
        await asyncio.wait_for(arrived.wait(), 20)
        arrived.clear()

        await asyncio.to_thread(node.kill)  # SIGKILL: no goodbye to the clients
        await asyncio.to_thread(node.restart)

        # No user action: the robust connection comes back, re-declares, re-consumes.
        await worker.perform(Job(handler="h", queue=queue, args={"n": 2}))
        await asyncio.wait_for(arrived.wait(), 60)
    # At-least-once: job 1's ack may have been in flight at the kill, so it may run again.
    assert set(seen) == {1, 2}
    assert seen[0] == 1
    assert "guest:guest" not in caplog.text


async def test_publishing_during_an_outage_fails_after_the_deadline_then_recovers(
    node: BrokerNode,
) -> None:
    queue = f"q.{uuid.uuid4().hex[:8]}"
    publisher = make(node, queue, publish_timeout_s=1)
    await publisher.perform(Job(handler="h", queue=queue))
    await asyncio.to_thread(node.stop)
    try:
        with pytest.raises(BrokerUnavailable, match=r"publish_timeout_s|cannot connect"):
            await publisher.perform(Job(handler="h", queue=queue))
    finally:
        await asyncio.to_thread(node.restart)
    publisher_after = make(node, queue)
    try:
        await publisher.stop()
        # A new perform works once the broker is back.
        await publisher_after.perform(Job(handler="h", queue=queue))
    finally:
        await publisher_after.stop()
    # The first job survived the restart (durable, persistent); the failed one is not there.
    state = await queue_state(Topology(name="awtest-reconnect").work_queue(queue), url=node.url)
    assert state == (2, 0)


async def test_publishing_during_an_outage_waits_for_the_broker(node: BrokerNode) -> None:
    queue = f"q.{uuid.uuid4().hex[:8]}"
    publisher = make(node, queue, publish_timeout_s=60)
    await publisher.perform(Job(handler="h", queue=queue))
    await asyncio.to_thread(node.kill)
    pending = asyncio.create_task(publisher.perform(Job(handler="h", queue=queue)))
    await asyncio.sleep(0.5)
    assert not pending.done()  # it waits, it does not report success
    await asyncio.to_thread(node.restart)
    await asyncio.wait_for(pending, 60)
    await publisher.stop()
    state = await queue_state(Topology(name="awtest-reconnect").work_queue(queue), url=node.url)
    assert state == (2, 0)


async def test_a_job_running_across_a_reconnect_is_not_acked_on_the_new_channel(
    node: BrokerNode, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"q.{uuid.uuid4().hex[:8]}"
    worker = make(node, queue)
    runs: list[bool] = []
    started = asyncio.Event()
    release = asyncio.Event()
    again = asyncio.Event()

    async def h(args: dict[str, Any], job: Job) -> None:
        runs.append(True)
        if len(runs) == 1:
            started.set()
            await release.wait()  # still running while the broker dies and comes back
        else:
            again.set()

    worker.register("h", h)
    async with worker:
        await worker.perform(Job(handler="h", queue=queue))
        await asyncio.wait_for(started.wait(), 20)
        await asyncio.to_thread(node.kill)
        await asyncio.to_thread(node.restart)
        await worker._broker.connect()
        release.set()  # the first run ends now; its delivery tag belongs to a dead channel
        await asyncio.wait_for(again.wait(), 60)  # RabbitMQ redelivered the unacked job
    assert len(runs) == 2
    assert "could not ack job" in caplog.text
