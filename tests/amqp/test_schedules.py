"""Periodic jobs on RabbitMQ: once per tick across replicas, and missed ticks after a pause.

See docs/periodic.md for the design these tests check.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from amqp_worker import AMQPWorker, Job
from amqp_worker._core.schedule import tick_id
from amqp_worker._rabbitmq.topology import Topology
from tests.harness.brokertools import BROKER_URL, delete_queues, delete_topology

pytestmark = pytest.mark.broker

ROOT = Path(__file__).parent.parent.parent
GUARD_S = 30.0


def second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


async def until(predicate: Any, timeout_s: float = GUARD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def start_in_the_middle_of_a_second() -> datetime:
    """Wait until x.500 s and return that moment: ticks are on whole seconds."""
    now = datetime.now(UTC)
    wait = (0.5 - now.microsecond / 1e6) % 1.0
    await asyncio.sleep(wait)
    return datetime.now(UTC)


@pytest.mark.timeout(90)
async def test_after_a_pause_of_all_workers_missed_ticks_follow_the_missed_policy() -> None:
    name = f"awtest-sched-{uuid.uuid4().hex[:8]}"
    queue = "ticks"
    fired: dict[str, list[datetime]] = {"skip": [], "once": [], "all": []}

    def replica() -> AMQPWorker:
        worker = AMQPWorker(BROKER_URL, name=name, queues=[queue])

        async def record(args: dict[str, Any], job: Job) -> None:
            assert job.scheduled_at is not None
            fired[args["policy"]].append(job.scheduled_at)

        worker.register("record", record)
        for policy in fired:
            job = Job(handler="record", queue=queue, args={"policy": policy})
            worker.schedule(f"s-{policy}", job, every=1, missed=policy)  # type: ignore[arg-type]
        return worker

    try:
        first = replica()
        async with first:
            await until(lambda: all(len(ticks) >= 2 for ticks in fired.values()))
        last_before = {policy: max(ticks) for policy, ticks in fired.items()}
        for ticks in fired.values():
            ticks.clear()
        await asyncio.sleep(5.2)  # every worker is down for five ticks
        restart = await start_in_the_middle_of_a_second()
        async with replica():
            await until(lambda: all(any(t > restart for t in ticks) for ticks in fired.values()))
        for policy, ticks in fired.items():
            missed = [t for t in ticks if t <= restart]
            gap = [
                last_before[policy] + timedelta(seconds=s)
                for s in range(1, int((second(restart) - last_before[policy]).total_seconds()) + 1)
            ]
            assert len(gap) >= 5, gap
            if policy == "skip":
                assert missed == [], ticks
            elif policy == "once":
                assert missed == [gap[-1]], (gap, ticks)
            else:
                assert sorted(missed) == gap, (gap, ticks)
            # After the restart every tick fires, once.
            after = sorted(t for t in ticks if t > restart)
            assert after == [after[0] + timedelta(seconds=i) for i in range(len(after))]
            assert len(set(ticks)) == len(ticks)
    finally:
        await delete_topology(Topology(name=name), [queue])


@pytest.mark.timeout(150)
async def test_three_replicas_fire_each_tick_once_while_one_is_killed_every_8_seconds() -> None:
    name = f"awtest-replicas-{uuid.uuid4().hex[:8]}"
    tick_queue = f"{name}.ticks"
    connection = await aio_pika.connect(BROKER_URL)
    channel = await connection.channel()
    await channel.declare_queue(tick_queue, durable=True)

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.amqp.schedule_worker",
            BROKER_URL,
            name,
            tick_queue,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    replicas = [await spawn() for _ in range(3)]
    kills = 0
    rng = random.Random(7)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            await asyncio.sleep(8)
            victim = rng.randrange(len(replicas))
            replicas[victim].send_signal(signal.SIGKILL)
            await replicas[victim].wait()
            kills += 1
            replicas[victim] = await spawn()
        for proc in replicas:
            proc.send_signal(signal.SIGTERM)
        for proc in replicas:
            await asyncio.wait_for(proc.wait(), 30)
    finally:
        for proc in replicas:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    ids: list[str] = []
    queue = await channel.declare_queue(tick_queue, passive=True)
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        job = Job.from_json(message.body)
        assert job.scheduled_at is not None
        assert job.id == tick_id("hb", job.scheduled_at)
        ids.append(job.id)
    await connection.close()
    try:
        counts = Counter(ids)
        ticks = sorted(datetime.fromisoformat(i.split("@", 1)[1]) for i in counts)
        span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
        missing = span - len(ticks)
        duplicates = sum(n - 1 for n in counts.values())
        print(
            f"\nschedule replicas: {span} ticks in {span} s, {len(ids)} jobs, "
            f"{missing} missing, {duplicates} duplicates (all same-id), {kills} kills"
        )
        assert span >= 55
        assert missing == 0, "missed='all': every tick in the window ran at least once"
        assert duplicates <= kills, "at most one duplicate per kill"
    finally:
        await delete_topology(Topology(name=name), [f"{tick_queue}.idle"])
        await delete_queues([tick_queue])
