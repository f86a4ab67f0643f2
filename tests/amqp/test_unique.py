"""Unique jobs on RabbitMQ: racing publisher processes, releases, lock queue clean-up.

The contract (tests/contract/test_unique_contract.py) holds in one process;
here four processes, each with its own connection, race for the same keys,
and the broker alone decides.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from amqp_worker import DuplicateJob, Job, PublishNacked
from amqp_worker._rabbitmq.unique_names import lock_queue
from tests.amqp.conftest import Workers
from tests.harness.brokertools import BROKER_URL, delete_queues, queue_state

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

ROOT = Path(__file__).parent.parent.parent
PUBLISHERS = 4
KEYS = 200
GUARD_S = 60.0


@pytest.fixture
async def lock_queues(workers: Workers) -> AsyncIterator[list[str]]:
    """Lock queue names to delete after the test (the workers are stopped first)."""
    names: list[str] = []
    yield names
    await workers.close()
    await delete_queues(names)


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_racing_publisher_processes_enqueue_each_key_exactly_once(
    workers: Workers, lock_queues: list[str]
) -> None:
    prefix = f"race.{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}.{n}" for n in range(KEYS)]
    lock_queues.extend(lock_queue(workers.topology.name, key) for key in keys)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.amqp.unique_publisher",
            BROKER_URL,
            workers.topology.name,
            workers.queue,
            prefix,
            str(KEYS),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(PUBLISHERS)
    ]
    try:
        for proc in procs:  # each has connected and declared: then all start together
            assert proc.stdout is not None
            assert await asyncio.wait_for(proc.stdout.readline(), GUARD_S) == b"ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.drain()
            proc.stdin.close()
        outputs = [await asyncio.wait_for(proc.communicate(), 120) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    reports = [json.loads(stdout) for stdout, _ in outputs]
    assert [proc.returncode for proc in procs] == [0] * PUBLISHERS
    assert [r["errors"] for r in reports] == [[]] * PUBLISHERS
    enqueued = Counter(key for r in reports for key in r["accepted"])
    refused = Counter(key for r in reports for key in r["refused"])
    # Exactly one job per key went in; every other perform raised DuplicateJob for its key.
    assert sorted(enqueued) == sorted(keys)
    assert set(enqueued.values()) == {1}
    assert sum(refused.values()) == (PUBLISHERS - 1) * KEYS
    assert refused == Counter(dict.fromkeys(keys, PUBLISHERS - 1))
    state = await queue_state(workers.topology.work_queue(workers.queue))
    assert state is not None
    assert state[0] == KEYS + PUBLISHERS  # one job per key, one warm-up job per publisher

    # A consumer runs them; once each is settled its key is free again, and its lock
    # queue is gone.
    ran: Counter[str] = Counter()
    consumer = workers(max_concurrency=50)

    async def unique(args: dict[str, Any]) -> None:
        ran[args["key"]] += 1

    async def warm_up(args: dict[str, Any]) -> None:
        pass

    consumer.register("unique", unique)
    consumer.register("warm-up", warm_up)
    async with consumer:

        async def all_ran() -> bool:
            return len(ran) == KEYS

        await until(all_ran, "not every job ran")

        async def released() -> bool:
            states = [await queue_state(name) for name in lock_queues[:20]]
            return all(s is None for s in states)

        await until(released, "lock queues were not deleted on release")
    assert set(ran.values()) == {1}
    publisher = workers()
    again = await publisher.perform_many(
        [Job(handler="unique", queue=workers.queue, unique_key=key) for key in keys]
    )
    assert len(again) == KEYS
    with pytest.raises(DuplicateJob):
        await publisher.perform(Job(handler="unique", queue=workers.queue, unique_key=keys[0]))


async def test_a_key_released_and_at_once_taken_again_is_never_lost(
    workers: Workers, lock_queues: list[str]
) -> None:
    """A publisher hammers one key while a consumer runs and releases it: runs never overlap,
    and every accepted job runs exactly once."""
    key = f"hammer.{uuid.uuid4().hex[:8]}"
    lock_queues.append(lock_queue(workers.topology.name, key))
    running = 0
    overlaps = 0
    runs = 0
    consumer = workers(max_concurrency=10)

    async def unique(args: dict[str, Any]) -> None:
        nonlocal running, overlaps, runs
        running += 1
        overlaps += running > 1
        await asyncio.sleep(0.01)
        running -= 1
        runs += 1

    consumer.register("unique", unique)
    publisher = workers()
    accepted = refused = 0
    async with consumer:
        while accepted < 20:
            try:
                await publisher.perform(Job(handler="unique", queue=workers.queue, unique_key=key))
                accepted += 1
            except DuplicateJob:
                refused += 1
            await asyncio.sleep(0)

        async def all_ran() -> bool:
            return runs == accepted

        await until(all_ran, f"{runs} of {accepted} jobs ran")
    assert overlaps == 0
    assert refused > 0


async def test_a_failed_job_publish_releases_the_lock(
    workers: Workers, lock_queues: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is taken, then the job's publish is refused: the key is free again at once."""
    key = f"nacked.{uuid.uuid4().hex[:8]}"
    name = lock_queue(workers.topology.name, key)
    lock_queues.append(name)
    publisher = workers()
    job = Job(handler="h", queue=workers.queue, unique_key=key)
    await publisher.perform(Job(handler="h", queue=workers.queue))  # declares the work queue

    async def refuse(*args: Any, **kwargs: Any) -> None:
        assert await queue_state(name) == (1, 0)  # the token is in: the lock was taken
        raise PublishNacked("refused on purpose", (job.id,))

    with monkeypatch.context() as patch:
        patch.setattr(publisher._publisher, "publish", refuse)
        with pytest.raises(PublishNacked):
            await publisher.perform(job)
    assert await queue_state(name) is None  # released: token taken back, queue deleted
    await publisher.perform(job)
    assert await queue_state(name) == (1, 0)
