"""Retries on RabbitMQ: through the delay topology, confirmed before ack, x-death stripped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from amqp_worker import Job, RetryPolicy
from tests.amqp.conftest import Workers
from tests.harness.brokertools import drain, queue_state

pytestmark = pytest.mark.broker

GUARD_S = 30.0
# Longer than the 1 s hold window, so retries really wait in the broker's delay queues.
SLOW = RetryPolicy(max_retries=1, base_s=2.0, jitter=0.0)


async def test_a_retry_waiting_in_the_broker_survives_a_worker_restart(workers: Workers) -> None:
    failed_once = asyncio.Event()
    first = workers(retry=SLOW)

    async def fails(args: dict[str, Any], job: Job) -> None:
        failed_once.set()
        raise RuntimeError("first worker fails")

    first.register("h", fails)
    async with first:
        await first.perform(Job(handler="h", queue=workers.queue))
        await asyncio.wait_for(failed_once.wait(), GUARD_S)
        retried_at = time.time()
    # The first worker is gone; the retry is in the delay topology, not in any process.
    await asyncio.sleep(0.5)

    seen: list[int] = []
    done = asyncio.Event()
    second = workers(retry=SLOW)

    async def works(args: dict[str, Any], job: Job) -> None:
        seen.append(job.attempt)
        done.set()

    second.register("h", works)
    async with second:
        await asyncio.wait_for(done.wait(), GUARD_S)
        assert time.time() >= retried_at + 2.0 - 0.05  # waited out its backoff
    assert seen == [1]


async def test_retries_through_the_delay_levels_carry_no_x_death(workers: Workers) -> None:
    worker = workers(retry=SLOW)
    runs: list[int] = []

    async def always(args: dict[str, Any], job: Job) -> None:
        runs.append(job.attempt)
        raise ValueError(f"attempt {job.attempt}")

    worker.register("h", always)
    failed = worker.topology.failed_queue(workers.queue)
    async with worker:
        await worker.perform(Job(handler="h", queue=workers.queue))
        deadline = time.monotonic() + GUARD_S
        while await queue_state(failed) != (1, 0):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert runs == [0, 1]
    [parked] = await drain(failed)
    headers = parked["headers"]
    assert not [k for k in headers if k.startswith(("x-death", "x-first-death", "x-last-death"))]
    assert not [k for k in headers if k.startswith("aw-delay-")]
    assert headers["aw-attempts"] == 2
    assert [h["error_message"] for h in headers["aw-history"]] == ["attempt 0", "attempt 1"]


async def test_start_warns_about_timeouts_longer_than_the_consumer_timeout(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    worker = workers(consumer_timeout_s=60)
    worker.register("long", lambda args: None, timeout_s=600)
    worker.register("short", lambda args: None, timeout_s=5)
    async with worker:
        pass
    warned = [r.getMessage() for r in caplog.records if "consumer timeout" in r.getMessage()]
    assert len(warned) == 1
    assert "'long'" in warned[0]
