"""Unique jobs: one live job per ``unique_key``, the same on every worker (SimpleWorker,
TimeTravelWorker on the wall clock, AMQPWorker).

Releases follow the settled ack, so a test that expects a key to be free again
polls for it (with a generous guard); nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp_worker import DuplicateJob, Job, PermanentError, RetryPolicy, Worker
from amqp_worker._rabbitmq.unique_names import lock_queue
from tests.conftest import SESSION_NAME, WorkerKit
from tests.harness.brokertools import delete_queues

GUARD_S = 30.0
RETRY_ONCE = RetryPolicy(max_retries=1, base_s=0.1, factor=1.0, jitter=0.0)


class Keys:
    """Unique keys no other test uses; their lock queues are deleted afterwards (AMQP)."""

    def __init__(self, kit: WorkerKit) -> None:
        self.kit = kit
        self.made: list[str] = []

    def __call__(self, label: str) -> str:
        key = f"{self.kit.queue}.{label}"
        self.made.append(key)
        return key


@pytest.fixture
async def keys(kit: WorkerKit) -> AsyncIterator[Keys]:
    made = Keys(kit)
    yield made
    if kit.kind == "amqp":
        await kit.close()  # stops the workers first: no release may race the delete
        await delete_queues(lock_queue(SESSION_NAME, key) for key in made.made)


class Runs:
    """A handler that records each run's ``n`` and succeeds."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.changed = asyncio.Event()

    async def __call__(self, args: dict[str, Any]) -> None:
        self.seen.append(args.get("n"))
        self.changed.set()

    async def until(self, count: int) -> None:
        async def wait() -> None:
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), GUARD_S)


async def refused(worker: Worker, job: Job) -> DuplicateJob:
    with pytest.raises(DuplicateJob) as caught:
        await worker.perform(job)
    return caught.value


async def accepted_again(worker: Worker, job: Job) -> int:
    """Perform ``job`` until its key is free (the release follows the ack); the refusals seen."""
    deadline = time.monotonic() + GUARD_S
    refusals = 0
    while True:
        try:
            await worker.perform(job)
            return refusals
        except DuplicateJob:
            refusals += 1
            assert time.monotonic() < deadline, "the key was never released"
            await asyncio.sleep(0.05)


async def test_a_second_perform_of_a_queued_key_is_refused_and_enqueues_nothing(
    kit: WorkerKit, keys: Keys
) -> None:
    worker = kit.make(max_concurrency=1)
    runs = Runs()
    worker.register("once", runs)
    key = keys("queued")
    await worker.perform(kit.job("once", {"n": 1}, unique_key=key))
    error = await refused(worker, kit.job("once", {"n": 2}, unique_key=key))
    assert error.key == key
    assert key in str(error)
    await worker.perform(kit.job("once", {"n": "after"}))  # no key: runs after the first
    async with worker:
        await runs.until(2)
    assert runs.seen == [1, "after"]


async def test_after_success_the_key_can_be_enqueued_again(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    runs = Runs()
    worker.register("once", runs)
    key = keys("success")
    async with worker:
        await worker.perform(kit.job("once", {"n": 1}, unique_key=key))
        await runs.until(1)
        await accepted_again(worker, kit.job("once", {"n": 2}, unique_key=key))
        await runs.until(2)
    assert runs.seen == [1, 2]


async def test_after_park_the_key_can_be_enqueued_again(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    attempts: list[int] = []

    async def broken(args: dict[str, Any], job: Job) -> None:
        attempts.append(job.attempt)
        raise PermanentError("never works")

    worker.register("broken", broken)
    key = keys("park")
    async with worker:
        await worker.perform(kit.job("broken", unique_key=key))
        deadline = time.monotonic() + GUARD_S
        while not await worker.failed.list():
            assert time.monotonic() < deadline, "the job was never parked"
            await asyncio.sleep(0.05)
        await accepted_again(worker, kit.job("broken", unique_key=key))


async def test_a_delayed_job_holds_its_key(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    worker.register("later", Runs())
    key = keys("delayed")
    await worker.perform_in(kit.job("later", unique_key=key), 3600)
    await refused(worker, kit.job("later", unique_key=key))
    with pytest.raises(DuplicateJob):
        await worker.perform_in(kit.job("later", unique_key=key), 1)
    other = keys("delayed-at")
    await worker.perform_at(kit.job("later", unique_key=other), Job(handler="x").enqueued_at)
    await refused(worker, kit.job("later", unique_key=other))


async def test_the_window_frees_a_key_whose_job_never_finishes(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()  # never started: the job stays queued
    worker.register("stuck", Runs())
    key = keys("window")
    window_s = 3.0
    started = time.monotonic()
    await worker.perform(kit.job("stuck", unique_key=key, unique_for_s=window_s))
    try:
        await worker.perform(kit.job("stuck", unique_key=key))
        second_went_in = True
    except DuplicateJob:
        second_went_in = False
    if time.monotonic() - started < window_s - 0.5:  # only a slow machine gets past the window
        assert not second_went_in
    await accepted_again(worker, kit.job("stuck", unique_key=key))


async def test_different_keys_do_not_interfere(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    worker.register("once", Runs())
    first, second = keys("a"), keys("b")
    await worker.perform(kit.job("once", unique_key=first))
    await worker.perform(kit.job("once", unique_key=second))
    await worker.perform(kit.job("once"))  # no key: never refused
    await worker.perform(kit.job("once"))
    assert (await refused(worker, kit.job("once", unique_key=second))).key == second


async def test_a_retry_keeps_the_key(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make(retry=RETRY_ONCE)
    failed_once = asyncio.Event()
    go = asyncio.Event()
    done = asyncio.Event()

    async def flaky(args: dict[str, Any], job: Job) -> None:
        if job.attempt == 0:
            failed_once.set()
            raise RuntimeError("first attempt fails")
        await go.wait()
        done.set()

    worker.register("flaky", flaky)
    key = keys("retry")
    async with worker:
        await worker.perform(kit.job("flaky", unique_key=key))
        await asyncio.wait_for(failed_once.wait(), GUARD_S)
        await refused(worker, kit.job("flaky", unique_key=key))  # waiting for, or in, its retry
        go.set()
        await asyncio.wait_for(done.wait(), GUARD_S)
        await accepted_again(worker, kit.job("flaky", unique_key=key))


async def test_perform_many_takes_every_key_or_none(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    worker.register("once", Runs())
    live, fresh = keys("live"), keys("fresh")
    await worker.perform(kit.job("once", unique_key=live))
    with pytest.raises(DuplicateJob) as caught:
        await worker.perform_many(
            [kit.job("once", unique_key=fresh), kit.job("once", unique_key=live)]
        )
    assert caught.value.key == live
    await worker.perform(kit.job("once", unique_key=fresh))  # the batch left it free
    twice = keys("twice")
    with pytest.raises(DuplicateJob):
        await worker.perform_many(
            [kit.job("once", unique_key=twice), kit.job("once", unique_key=twice)]
        )
    await worker.perform(kit.job("once", unique_key=twice))


async def test_a_window_over_thirty_days_is_refused(kit: WorkerKit, keys: Keys) -> None:
    worker = kit.make()
    worker.register("once", Runs())
    with pytest.raises(ValueError, match="30 days"):
        await worker.perform(kit.job("once", unique_key=keys("long"), unique_for_s=31 * 86400))
