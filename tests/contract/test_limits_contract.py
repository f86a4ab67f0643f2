"""Rate and concurrency limits: the same contract on every worker.

Bounds only (never more than the limit allows); nothing asserts that a job
ran by some time. Each test names its handler afresh: on RabbitMQ a limited
handler's token queue is named by the handler, and tests share one ``name``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from amqp_worker import InvalidHandler, RetryPolicy, SimpleWorker, Worker
from tests.conftest import WorkerKit
from tests.contract.test_controls_contract import until


def fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def most_in_any_window(starts: list[float], window_s: float) -> int:
    """The most starts in any half-open window ``[t, t + window_s)``."""
    ordered = sorted(starts)
    return max(
        sum(1 for other in ordered if start <= other < start + window_s) for start in ordered
    )


async def test_a_rate_limited_handler_never_starts_more_than_rate_plus_burst_a_second(
    kit: WorkerKit,
) -> None:
    worker = kit.make(max_concurrency=8)
    name = fresh("rated")
    starts: list[float] = []

    async def work(args: dict[str, Any]) -> None:
        starts.append(time.monotonic())

    worker.register(name, work, rate="10/s", burst=2)
    async with worker:
        for _ in range(25):
            await worker.perform(kit.job(name))
        await until(lambda: len(starts) == 25)
    assert most_in_any_window(starts, 1.0) <= 10 + 2


async def test_a_concurrency_limit_caps_the_attempts_running_at_once(kit: WorkerKit) -> None:
    worker = kit.make(max_concurrency=8)
    name = fresh("capped")
    running = 0
    most = 0
    done: list[int] = []

    async def work(args: dict[str, Any]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(args["n"])

    worker.register(name, work, concurrency=2)
    async with worker:
        for n in range(10):
            await worker.perform(kit.job(name, {"n": n}))
        await until(lambda: len(done) == 10)
    assert sorted(done) == list(range(10))
    assert 1 <= most <= 2


async def test_a_limited_job_that_fails_is_retried_under_its_limit(kit: WorkerKit) -> None:
    worker = kit.make()
    name = fresh("flaky")
    attempts: list[int] = []

    async def work(args: dict[str, Any], job: Any) -> None:
        attempts.append(job.attempt)
        if job.attempt == 0:
            raise RuntimeError("first attempt fails")

    retry = RetryPolicy(max_retries=2, base_s=0.05, jitter=0.0)
    worker.register(name, work, rate="20/s", concurrency=1, retry=retry)
    async with worker:
        await worker.perform(kit.job(name))
        await until(lambda: attempts == [0, 1])


async def test_unlimited_handlers_of_a_limited_worker_run_as_before(kit: WorkerKit) -> None:
    worker = kit.make()
    slow, free = fresh("slow"), fresh("free")
    ran: list[str] = []
    worker.register(slow, lambda args: ran.append("slow"), rate="1/min")
    worker.register(free, lambda args: ran.append("free"))
    async with worker:
        await worker.perform(kit.job(slow))
        await worker.perform(kit.job(free))
        await until(lambda: "free" in ran)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "fast"}, "rate must look like"),
        ({"rate": "0/s"}, "above 0"),
        ({"rate": 5}, "rate must be a str"),
        ({"burst": 3}, "burst needs a rate"),
        ({"rate": "5/s", "burst": 0}, "burst must be"),
        ({"concurrency": 0}, "concurrency must be"),
        ({"concurrency": True}, "concurrency must be"),
        ({"rate": "5/s", "burst": 2, "limit_key": "tenant"}, "burst does not apply"),
        ({"rate": "2.5/s", "limit_key": "tenant"}, "whole count"),
        ({"limit_key": "tenant"}, "limit_key needs a rate or a concurrency"),
        ({"concurrency": 2, "limit_key": 5}, "limit_key must be"),
        ({"concurrency": 2, "limit_key": ""}, "limit_key must name"),
    ],
)
async def test_bad_limits_are_refused_when_the_handler_is_registered(
    kit: WorkerKit, options: dict[str, Any], message: str
) -> None:
    worker = kit.make()
    with pytest.raises(InvalidHandler, match=message):
        worker.register(fresh("bad"), lambda args: None, **options)


async def test_a_limited_handler_cannot_be_registered_once_the_worker_runs(
    kit: WorkerKit,
) -> None:
    worker: Worker = kit.make()
    async with worker:
        with pytest.raises(InvalidHandler, match="before start"):
            worker.register(fresh("late"), lambda args: None, concurrency=1)
        worker.register(fresh("late_free"), lambda args: None)


# -- per key --------------------------------------------------------------------------


async def test_a_per_key_rate_holds_for_each_key_on_its_own(kit: WorkerKit) -> None:
    worker = kit.make(max_concurrency=8)
    name = fresh("keyed")
    starts: dict[str, list[float]] = {"a": [], "b": []}

    async def work(args: dict[str, Any]) -> None:
        starts[args["tenant"]].append(time.monotonic())

    worker.register(name, work, rate="4/s", limit_key="tenant")
    async with worker:
        for n in range(16):
            await worker.perform(kit.job(name, {"tenant": "ab"[n % 2]}))
        await until(lambda: sum(len(s) for s in starts.values()) == 16)
    # The window is exact on the markers; a start may come a few ms after its marker.
    slack = 1 if kit.kind == "amqp" else 0
    for key in "ab":
        assert len(starts[key]) == 8
        assert most_in_any_window(starts[key], 1.0) <= 4 + slack


async def test_a_per_key_concurrency_limit_caps_each_key_by_a_key_function(
    kit: WorkerKit,
) -> None:
    worker = kit.make(max_concurrency=12)
    name = fresh("keyed_cap")
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    done: list[int] = []

    async def work(args: dict[str, Any]) -> None:
        key = args["t"]
        running[key] = running.get(key, 0) + 1
        most[key] = max(most.get(key, 0), running[key])
        await asyncio.sleep(0.05)
        running[key] -= 1
        done.append(args["n"])

    worker.register(name, work, concurrency=2, limit_key=lambda job: job.args["t"])
    async with worker:
        for n in range(15):
            await worker.perform(kit.job(name, {"t": f"tenant-{n % 3}", "n": n}))
        await until(lambda: len(done) == 15)
    assert sorted(done) == list(range(15))
    assert set(most) == {"tenant-0", "tenant-1", "tenant-2"}
    assert max(most.values()) <= 2


def test_limits_describe_themselves() -> None:
    worker = SimpleWorker()
    worker.register("a", lambda args: None, rate="50/s", burst=5, concurrency=4)
    worker.register("b", lambda args: None, rate="10/min", limit_key="tenant")
    assert worker.limits["a"].describe() == "rate=50/s burst=5 concurrency=4"
    assert worker.limits["b"].describe() == "rate=10/min per tenant"
