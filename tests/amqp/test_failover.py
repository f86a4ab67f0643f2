"""Several broker URLs: the worker dials the next node that answers, and fails over when its node dies.

The two "nodes" here are a private RabbitMQ node this module starts and kills
(tests/harness/broker_node.py) and the shared test broker, which is never touched
beyond its own unique queues. They are not one cluster, which is enough to
prove the connection side: a robust channel re-declares the worker's
topology on the node it moves to. Cluster behaviour (quorum queues surviving
a node) is tested in tests/cluster/.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.broker_node import BrokerNode, rabbitmq_available
from tests.harness.brokertools import BROKER_ADDRESS, BROKER_URL, delete_topology

BROKER_PORT = int(BROKER_ADDRESS.rsplit(":", 1)[1])

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

GUARD_S = 60.0
DEAD_URL = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root to start a private node")
    with BrokerNode() as started:
        yield started


@pytest.fixture
def in_given_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the URL list in the order given, so the test knows which node comes first."""
    monkeypatch.setattr(random, "shuffle", lambda items: None)


def port_of(described: str | None) -> int:
    assert described is not None
    return int(described.split()[0].rsplit(":", 1)[1])


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """amqp_worker's records (aio-pika's own may no longer format once their callback ended)."""
    return "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("amqp_worker")
    )


async def wait_until(check: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + GUARD_S
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.usefixtures("in_given_order")
async def test_a_dead_first_node_is_skipped() -> None:
    name = f"awtest-fo-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(f"{DEAD_URL},{BROKER_URL}", name=name, queues=["q"])
    try:
        await worker.start()
        assert port_of(worker.node) == BROKER_PORT
        assert BROKER_ADDRESS in repr(worker)
        assert "guest:guest" not in repr(worker)
    finally:
        await worker.stop(timeout_s=0)
        await delete_topology(Topology(name=name), ["q"])


@pytest.mark.usefixtures("in_given_order")
async def test_the_worker_moves_to_the_next_node_when_its_node_dies(
    node: BrokerNode, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"awtest-fo-{uuid.uuid4().hex[:8]}"
    queue = "q"
    worker = AMQPWorker(
        f"{node.url},{BROKER_URL}",
        name=name,
        queues=[queue],
        reconnect_interval_s=0.2,
        heartbeat_s=2,
        publish_timeout_s=GUARD_S,
    )
    seen: list[int] = []
    arrived = asyncio.Event()

    async def h(args: dict[str, int]) -> None:
        seen.append(args["n"])
        arrived.set()

    worker.register("h", h)
    # In a cluster every node knows every exchange and queue; these two nodes are
    # not one, so declare the worker's topology on the second one beforehand.
    async with AMQPWorker(BROKER_URL, name=name, queues=[queue]):
        pass
    caplog.set_level(logging.INFO, logger="amqp_worker")
    try:
        async with worker:
            assert port_of(worker.node) == node.port
            await worker.perform(Job(handler="h", queue=queue, args={"n": 1}))
            await asyncio.wait_for(arrived.wait(), GUARD_S)
            arrived.clear()

            await asyncio.to_thread(node.kill)  # SIGKILL: no goodbye to the clients
            # No user action: the robust connection moves to the next node and
            # re-declares the worker's queues and consumers there.
            await wait_until(
                lambda: worker.node is not None and BROKER_ADDRESS in worker.node, "failover"
            )
            await worker.perform(Job(handler="h", queue=queue, args={"n": 2}))
            await asyncio.wait_for(arrived.wait(), GUARD_S)
            # "reconnected" is logged once every channel is restored, which may come
            # after job 2 ran on the channels restored first.
            await wait_until(
                lambda: f"reconnected to amqp://{BROKER_ADDRESS}" in ours(caplog), "reconnect log"
            )
        assert 2 in seen
        text = ours(caplog)
        assert f"127.0.0.1:{node.port}" in text
        assert "reconnecting to the next node" in text
        assert "guest:guest" not in text
    finally:
        await asyncio.to_thread(node.restart)
        await delete_topology(Topology(name=name), [queue])
