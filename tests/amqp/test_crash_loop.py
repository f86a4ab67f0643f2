"""Crash loops: a handler that kills its worker ends in the failed queue; its neighbours all run.

Each worker here is a real process, killed by its own handler (``os._exit``),
on the shared broker, under a worker name of its own.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

from amqp_worker import AMQPWorker, FailureReason, Job
from amqp_worker._rabbitmq.messages import DELIVERIES_HEADER
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.brokertools import BROKER_URL, delete_topology, drain

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]

ROOT = Path(__file__).parent.parent.parent
QUEUE = "q"
MAX_DELIVERIES = 3
INNOCENTS = 12
#: Worker processes started at most: each death of the poison job costs one.
MAX_STARTS = MAX_DELIVERIES + 3


def finished_jobs(done: Path) -> list[str]:
    return sorted(os.listdir(done))


async def start_workers_until(
    name: str, queue_type: str, done: Path, finished: asyncio.Event
) -> int:
    """Start worker processes one after another until ``finished``; return how many died."""
    deaths = 0
    for _ in range(MAX_STARTS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.amqp.crash_worker",
            BROKER_URL,
            name,
            QUEUE,
            queue_type,
            str(MAX_DELIVERIES),
            str(done),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(finished.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not exited.done():
            proc.kill()
            await proc.wait()
            return deaths
        deaths += 1
    return deaths


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
async def test_a_job_that_kills_its_worker_is_parked_as_crashed_and_its_neighbours_run(
    tmp_path: Path, queue_type: str
) -> None:
    name = f"awtest-crash-{uuid.uuid4().hex[:8]}"
    publisher = AMQPWorker(BROKER_URL, name=name, queues=[QUEUE], queue_type=queue_type)  # type: ignore[arg-type]
    poison = Job(handler="poison", queue=QUEUE)
    innocents = [Job(handler="innocent", queue=QUEUE, args={"n": n}) for n in range(INNOCENTS)]
    finished = asyncio.Event()

    async def watch() -> None:
        for _ in range(600):
            if await publisher.failed.list() and len(finished_jobs(tmp_path)) == INNOCENTS:
                finished.set()
                return
            await asyncio.sleep(0.2)

    try:
        await publisher.perform(poison)
        await publisher.perform_many(innocents)
        watcher = asyncio.ensure_future(watch())
        deaths = await start_workers_until(name, queue_type, tmp_path, finished)
        await asyncio.wait_for(watcher, 130)

        [parked] = await publisher.failed.list()
        assert parked.id == poison.id
        assert parked.reason is FailureReason.CRASHED
        assert parked.error_type.endswith("JobCrashed")
        assert f"handed out {MAX_DELIVERIES} times" in parked.error_message
        # Every innocent job ran, although each death handed some of them back too.
        assert finished_jobs(tmp_path) == sorted(job.id for job in innocents)
        assert deaths == MAX_DELIVERIES
        topology = publisher.topology
        [message] = await drain(topology.failed_queue(QUEUE))
        assert message["headers"][DELIVERIES_HEADER] == MAX_DELIVERIES
        # Nothing is left anywhere: not in the work queue, not in quarantine.
        assert await drain(topology.work_queue(QUEUE)) == []
        assert await drain(topology.quarantine_queue(QUEUE)) == []
    finally:
        await publisher.stop()
        await delete_topology(Topology(name=name), [QUEUE])
