"""Shared fixtures. ``kit`` builds workers for the contract suite, one param per implementation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker
from amqp_worker.topology import Topology
from tests.brokertools import BROKER_URL, delete_topology

IMPLEMENTATIONS = ["simple", "amqp"]

#: One worker name per test session: the delay topology is shared by this run's tests
#: (as it is by a deployment's queues) and deleted at the end; work queues are per test.
SESSION_NAME = f"awtest-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session", autouse=True)
def _delete_session_topology() -> Iterator[None]:
    yield
    asyncio.run(delete_topology(Topology(name=SESSION_NAME)))


class WorkerKit:
    """Builds workers of one implementation, with names no other test uses."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.queue = f"test.{uuid.uuid4().hex[:12]}"
        self.workers: list[Any] = []

    def make(self, **options: Any) -> Worker:
        worker: Worker
        if self.kind == "amqp":
            worker = AMQPWorker(
                BROKER_URL,
                name=SESSION_NAME,
                queues=[self.queue],
                publish_timeout_s=10,
                **options,
            )
        else:
            worker = SimpleWorker(**options)
        self.workers.append(worker)
        return worker

    def job(self, handler: str, args: dict[str, Any] | None = None, **fields: Any) -> Job:
        return Job(handler=handler, queue=self.queue, args=args or {}, **fields)

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop(timeout_s=0)
        if self.kind == "amqp":
            await delete_topology_queues(self.queue)


async def delete_topology_queues(queue: str) -> None:
    from tests.brokertools import delete_queues

    topology = Topology(name=SESSION_NAME)
    await delete_queues(
        [topology.work_queue(queue), topology.due_queue(queue), topology.failed_queue(queue)]
    )


@pytest.fixture(params=IMPLEMENTATIONS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[WorkerKit]:
    kit = WorkerKit(request.param)
    try:
        yield kit
    finally:
        await kit.close()
