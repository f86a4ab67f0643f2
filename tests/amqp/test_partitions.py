"""Per-key order on RabbitMQ: partition queues, across worker processes and a kill -9."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from amqp_worker import AMQPWorker, InvalidControl, Job
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.testing import delete_topology
from tests.harness.brokertools import BROKER_URL
from tests.harness.processes import spawn_worker, stop_worker

pytestmark = [pytest.mark.broker]

PARTITIONS = 4
KEYS = [f"customer-{i}" for i in range(6)]
PER_KEY = 40
GUARD_S = 120.0


def lines(runs: Path) -> list[list[str]]:
    return [line.split() for line in runs.read_text().splitlines()] if runs.exists() else []


async def spawn(name: str, queue: str, runs: Path, log: Path) -> asyncio.subprocess.Process:
    return await spawn_worker(
        "tests.amqp.partition_worker", log, name, queue, str(PARTITIONS), str(runs)
    )


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    await stop_worker(proc, sig)


async def test_a_partition_key_without_partitions_is_refused_at_perform() -> None:
    worker = AMQPWorker(BROKER_URL, name=f"awtest-{uuid.uuid4().hex[:8]}", queues=["q"])
    with pytest.raises(InvalidControl, match="partitions"):
        await worker.perform(Job(handler="h", queue="q", partition_key="k"))
    await worker.stop()


@pytest.mark.timeout(300)
async def test_per_key_order_holds_across_three_workers_and_a_kill_9(tmp_path: Path) -> None:
    name, queue = f"awtest-part-{uuid.uuid4().hex[:8]}", "orders"
    runs, log = tmp_path / "runs", tmp_path / "workers.log"
    settings = AMQPSettings(url=BROKER_URL, name=name, queues=(queue,), partitions=PARTITIONS)
    publisher = AMQPWorker(settings=settings)
    procs = [await spawn(name, queue, runs, log) for _ in range(3)]
    try:
        # Every worker consumes before the first job: the first partitions' actives
        # are then spread over the three.
        await asyncio.sleep(3)
        for n in range(PER_KEY):
            for key in KEYS:
                await publisher.perform(
                    Job(handler="step", queue=queue, args={"key": key, "n": n}, partition_key=key)
                )
        total = len(KEYS) * PER_KEY

        def ended() -> int:
            return len({(x[1], x[2]) for x in lines(runs) if x[0] == "end"})

        async with asyncio.timeout(GUARD_S):
            while ended() < total // 3:  # noqa: ASYNC110 - the workers are other processes
                await asyncio.sleep(0.05)
            # Kill the process that started the latest job: it dies mid-job.
            victim_pid = int(next(x for x in reversed(lines(runs)) if x[0] == "start")[3])
            victim = next(p for p in procs if p.pid == victim_pid)
            await stop(victim, signal.SIGKILL)
            while ended() < total:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        for proc in procs:
            await stop(proc)
        await publisher.stop()
        await delete_topology(settings)

    starts: dict[str, list[int]] = defaultdict(list)
    open_job: dict[str, tuple[int, str] | None] = defaultdict(lambda: None)
    for kind, key, number, pid in lines(runs):
        if kind == "start":
            running = open_job[key]
            if running is not None:
                # Only the killed process leaves a job unended, and that job comes back first.
                assert (running[1], int(number)) == (str(victim_pid), running[0]), (key, number)
            open_job[key] = (int(number), pid)
            starts[key].append(int(number))
        else:
            assert open_job[key] == (int(number), pid), (key, number, pid)
            open_job[key] = None
    for key in KEYS:
        # In order; the job the kill interrupted ran once more, straight away.
        assert list(dict.fromkeys(starts[key])) == list(range(PER_KEY)), key
        assert starts[key] == sorted(starts[key]), key
