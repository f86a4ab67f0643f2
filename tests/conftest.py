"""Shared fixtures. ``kit`` builds workers for the contract suite, one param per implementation."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker
from amqp_worker._rabbitmq.topology import Topology
from amqp_worker.testing import TimeTravelWorker
from tests.harness.brokertools import BROKER_URL, delete_topology, queue_state

#: The AMQP run of each contract test needs RabbitMQ; ``-m "not broker"`` leaves it out.
#: Every Worker the contract suite runs against. "time_travel" is amqp_worker.testing's
#: TimeTravelWorker left on the wall clock: tests written with it mean the same in production.
IMPLEMENTATIONS = ["simple", "time_travel", pytest.param("amqp", marks=pytest.mark.broker)]

#: One worker name per test session: the delay topology is shared by this run's tests
#: (as it is by a deployment's queues) and deleted at the end; work queues are per test.
SESSION_NAME = f"awtest-{uuid.uuid4().hex[:8]}"


#: Set when a test marked ``broker`` runs. Only such tests touch RabbitMQ, so a
#: ``-m "not broker"`` session has nothing to clean up there and never dials it.
BROKER_USED = pytest.StashKey[bool]()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("broker") is not None:
        item.config.stash[BROKER_USED] = True


@pytest.fixture(scope="session", autouse=True)
def _delete_session_topology(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    if pytestconfig.stash.get(BROKER_USED, False):
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
        elif self.kind == "time_travel":
            worker = TimeTravelWorker(**options)
        else:
            worker = SimpleWorker(**options)
        self.workers.append(worker)
        return worker

    def job(self, handler: str, args: dict[str, Any] | None = None, **fields: Any) -> Job:
        return Job(handler=handler, queue=self.queue, args=args or {}, **fields)

    async def consumers(self) -> tuple[int, int]:
        """Consumers RabbitMQ counts on this kit's work and due queues (the amqp kind only)."""
        assert self.kind == "amqp"
        topology = Topology(name=SESSION_NAME)
        counts: list[int] = []
        for name in (topology.work_queue(self.queue), topology.due_queue(self.queue)):
            state = await queue_state(name)
            assert state is not None, f"{name} was never declared"
            counts.append(state[1])
        return counts[0], counts[1]

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop(timeout_s=0)
        if self.kind == "amqp":
            await delete_topology_queues(self.queue)
            for worker in self.workers:
                await delete_limit_queues(worker, self.queue)


async def start_two_stuck_copies(kit: WorkerKit, worker: Worker) -> None:
    """Start ``worker`` running one job twice at once (same id) in a handler that never returns.

    For tests of what hooks see when two copies of a job overlap and ``stop()``
    then cancels both. Needs ``max_concurrency`` of at least 2.
    """
    running: list[int] = []
    both = asyncio.Event()

    async def stuck(args: dict[str, Any]) -> None:
        running.append(1)
        if len(running) == 2:
            both.set()
        await asyncio.Event().wait()  # until stop() cancels it

    worker.register("stuck", stuck)
    job = kit.job("stuck")
    await worker.start()
    await worker.perform(job)
    await worker.perform(job)  # the same id twice, running at once
    await asyncio.wait_for(both.wait(), 30)


async def delete_limit_queues(worker: Any, queue: str) -> None:
    """Delete the limit, token and leader queues of ``worker``'s limited handlers on ``queue``.

    Per-key rate windows are left to expire (``x-expires``): their names hold the keys.
    """
    from amqp_worker._rabbitmq.extra_topology import limited_queues
    from tests.harness.brokertools import delete_queues

    topology = Topology(name=SESSION_NAME)
    await delete_queues(limited_queues(topology, [queue], getattr(worker, "limits", {})))


async def delete_topology_queues(*queues: str, prefix: str = "") -> None:
    """Delete the work, due and failed queues of ``queues`` under SESSION_NAME and ``prefix``.

    The delay queues are shared by the whole session and go at its end.
    """
    from amqp_worker._rabbitmq.extra_topology import partition_queue
    from tests.harness.brokertools import delete_queues

    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    await delete_queues(
        name(queue)
        for queue in queues
        for name in (
            topology.work_queue,
            topology.due_queue,
            topology.failed_queue,
            topology.quarantine_queue,
        )
    )
    # The contract tests of per-key order use partitions=4.
    await delete_queues(partition_queue(topology, queue, i) for queue in queues for i in range(4))


def example_env(prefix: str) -> dict[str, str]:
    """This process's environment, pointed at the test broker under SESSION_NAME and ``prefix``."""
    return {
        **os.environ,
        "AMQP_WORKER_URL": BROKER_URL,
        "AMQP_WORKER_NAME": SESSION_NAME,
        "AMQP_WORKER_QUEUE_PREFIX": prefix,
    }


@pytest.fixture(params=IMPLEMENTATIONS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[WorkerKit]:
    kit = WorkerKit(request.param)
    try:
        yield kit
    finally:
        await kit.close()
