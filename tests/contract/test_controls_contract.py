"""Fleet controls checked where a job starts: the same contract on every worker.

Expiry (``Job.expires_at``, a handler's ``max_age_s``) and priorities. Waits
use generous guards against hangs; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from amqp_worker import (
    FailureReason,
    InvalidControl,
    InvalidHandler,
    JobFailed,
    RetryPolicy,
    Worker,
)
from tests.conftest import WorkerKit

GUARD_S = 30.0


async def parked(worker: Worker, job_id: str) -> Any:
    async def poll() -> Any:
        while True:
            found = [job for job in await worker.failed.list() if job.id == job_id]
            if found:
                return found[0]
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), GUARD_S)


async def until(predicate: Any) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the handlers set nothing to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), GUARD_S)


def recording(worker: Worker, **options: Any) -> list[str]:
    ran: list[str] = []

    async def work(args: dict[str, Any], job: Any) -> str:
        ran.append(job.id)
        return "done"

    worker.register("work", work, **options)
    return ran


# -- expiry ---------------------------------------------------------------------


async def test_a_job_past_its_expires_at_is_parked_as_expired_and_never_runs(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    ran = recording(worker)
    heard: list[str] = []
    worker.hooks.on_parked(lambda event: heard.append(str(event.reason)))
    stale = kit.job("work", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    fresh = kit.job("work", expires_at=datetime.now(UTC) + timedelta(hours=1))
    async with worker:
        await worker.perform(stale)
        await worker.perform(fresh)
        failed = await parked(worker, stale.id)
        await until(lambda: fresh.id in ran)
    assert failed.reason == FailureReason.EXPIRED
    assert failed.attempts == 1
    assert "expired" in failed.error_message
    assert stale.id not in ran
    assert heard == ["expired"]


async def test_a_handler_max_age_s_parks_a_job_that_waited_too_long(kit: WorkerKit) -> None:
    worker = kit.make()
    ran = recording(worker, max_age_s=0.2)
    job = kit.job("work")
    await worker.perform(job)  # not started: it waits in the queue
    await asyncio.sleep(0.6)
    async with worker:
        failed = await parked(worker, job.id)
        young = kit.job("work")
        await worker.perform(young)
        await until(lambda: young.id in ran)
    assert failed.reason == FailureReason.EXPIRED
    assert "max_age_s=0.2" in failed.error_message
    assert job.id not in ran


async def test_max_age_s_counts_from_when_a_delayed_job_is_due(kit: WorkerKit) -> None:
    worker = kit.make()
    ran = recording(worker, max_age_s=10)
    job = kit.job("work")
    async with worker:
        # Due in 0.5 s: its age counts from then, not from the enqueue.
        await worker.perform_in(job, 0.5)
        if kit.kind == "time_travel":
            await worker.advance(1.0)  # type: ignore[attr-defined]
        await until(lambda: job.id in ran)


async def test_an_expired_job_leaves_a_failure_as_its_result(kit: WorkerKit) -> None:
    worker = kit.make()
    recording(worker, result=True)
    job = kit.job("work", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    async with worker:
        handle = await worker.perform(job)
        with pytest.raises(JobFailed, match="expired") as failure:
            await handle.result(timeout_s=GUARD_S)
    assert failure.value.result.reason == "expired"


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "10", True])
async def test_max_age_s_must_be_a_positive_finite_number(kit: WorkerKit, bad: Any) -> None:
    worker = kit.make()
    with pytest.raises(InvalidHandler, match="max_age_s"):
        worker.register("work", lambda args: None, max_age_s=bad)


# -- priorities -----------------------------------------------------------------


async def test_waiting_jobs_run_highest_priority_first_and_in_order_within_one(
    kit: WorkerKit,
) -> None:
    # One at a time, one in flight: the order is the broker's (or the heap's) alone.
    options: dict[str, Any] = {"max_priority": 9, "prefetch": 1} if kit.kind == "amqp" else {}
    worker = kit.make(max_concurrency=1, **options)
    order: list[int] = []

    async def work(args: dict[str, Any]) -> None:
        order.append(int(args["n"]))

    worker.register("work", work)
    for n, priority in [(1, None), (2, 3), (3, 9), (4, 3), (5, 0)]:
        await worker.perform(kit.job("work", {"n": n}, priority=priority))
    async with worker:
        await until(lambda: len(order) == 5)
    assert order == [3, 2, 4, 1, 5]


# -- per-key order --------------------------------------------------------------


def partitioned(kit: WorkerKit, **options: Any) -> Worker:
    return kit.make(**({"partitions": 4} if kit.kind == "amqp" else {}), **options)


async def test_jobs_of_one_partition_key_run_one_at_a_time_in_enqueue_order(
    kit: WorkerKit,
) -> None:
    worker = partitioned(kit, max_concurrency=4)
    done: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    running: dict[str, int] = {"a": 0, "b": 0, "c": 0}
    overlaps: list[str] = []

    async def work(args: dict[str, Any]) -> None:
        key = str(args["key"])
        running[key] += 1
        if running[key] > 1:
            overlaps.append(key)
        await asyncio.sleep(0.005 * (int(args["n"]) % 3))  # uneven: a later job could pass
        done[key].append(int(args["n"]))
        running[key] -= 1

    worker.register("work", work)
    async with worker:
        for n in range(10):
            for key in done:
                await worker.perform(kit.job("work", {"key": key, "n": n}, partition_key=key))
        await until(lambda: sum(len(v) for v in done.values()) == 30)
    assert overlaps == []
    assert done == {key: list(range(10)) for key in done}


async def test_a_failed_partitioned_job_is_retried_before_the_next_of_its_key(
    kit: WorkerKit,
) -> None:
    worker = partitioned(kit, max_concurrency=2)
    order: list[tuple[int, int]] = []

    async def flaky(args: dict[str, Any], job: Any) -> None:
        order.append((int(args["n"]), job.attempt))
        if args["n"] == 0 and job.attempt == 0:
            raise RuntimeError("first attempt fails")

    worker.register("flaky", flaky, retry=RetryPolicy(max_retries=2, base_s=0.05, jitter=0))
    async with worker:
        for n in range(3):
            await worker.perform(kit.job("flaky", {"n": n}, partition_key="k"))
        await until(lambda: len(order) == 4)
    assert order == [(0, 0), (0, 1), (1, 0), (2, 0)]


async def test_a_partitioned_job_cannot_be_delayed(kit: WorkerKit) -> None:
    worker = partitioned(kit)
    worker.register("work", lambda args: None)
    with pytest.raises(InvalidControl, match="partition_key"):
        await worker.perform_in(kit.job("work", partition_key="k"), 5)
