"""Consuming against a real RabbitMQ: validate first, ack after success, park what cannot run."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job, RetryPolicy
from tests.amqp.conftest import Workers
from tests.harness.brokertools import BROKER_URL, drain, publish_raw, queue_state

pytestmark = pytest.mark.broker

GUARD_S = 20.0


async def wait_for_state(queue: str, want: tuple[int, int]) -> None:
    """Poll a queue until it holds ``want`` (ready, consumers); a hang guard, not a timing test."""
    deadline = time.monotonic() + GUARD_S
    while (state := await queue_state(queue)) != want:
        assert time.monotonic() < deadline, f"{queue}: {state} != {want}"
        await asyncio.sleep(0.05)


async def test_a_hand_written_json_job_from_plain_aio_pika_runs(workers: Workers) -> None:
    worker = workers()
    done = asyncio.Event()
    got: list[dict[str, Any]] = []

    async def send_email(args: dict[str, Any]) -> None:
        got.append(args)
        done.set()

    worker.register("send_email", send_email)
    async with worker:
        # The documented wire format, written by hand as another language would.
        body = json.dumps({"handler": "send_email", "args": {"user_id": 123}}).encode()
        await publish_raw(worker.topology.exchange, workers.queue, body)
        await asyncio.wait_for(done.wait(), GUARD_S)
    assert got == [{"user_id": 123}]


class Typed(BaseModel):
    n: int


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_job"),
        (b'{"args": {}}', "invalid_job"),
        (b'{"handler": "ok", "attempt": -1}', "invalid_job"),
        (b'{"handler": "nobody-registered-this"}', "unknown_handler"),
        (b'{"handler": "typed", "args": {"n": "not a number"}}', "invalid_args"),
        (b'{"handler": "boom"}', "handler_error"),
    ],
)
async def test_what_cannot_run_is_parked_with_its_reason_and_the_worker_goes_on(
    workers: Workers, body: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    worker = workers(retry=RetryPolicy(max_retries=0))
    done = asyncio.Event()

    async def ok(args: dict[str, Any]) -> None:
        done.set()

    async def typed(args: Typed) -> None:
        raise AssertionError("must not run with invalid args")

    async def boom(args: dict[str, Any]) -> None:
        raise KeyError("the reason")

    worker.register("ok", ok)
    worker.register("typed", typed)
    worker.register("boom", boom)
    failed = worker.topology.failed_queue(workers.queue)
    async with worker:
        await publish_raw(
            worker.topology.exchange,
            workers.queue,
            body,
            headers={"x-death": [{"count": 1, "queue": "elsewhere"}], "x-first-death-queue": "q"},
        )
        await worker.perform(Job(handler="ok", queue=workers.queue))
        await asyncio.wait_for(done.wait(), GUARD_S)
        await wait_for_state(failed, (1, 0))
        await wait_for_state(worker.topology.work_queue(workers.queue), (0, 1))
    [parked] = await drain(failed)
    headers = parked["headers"]
    assert parked["body"] == body  # the original bytes, untouched
    assert headers["aw-failure-reason"] == reason
    assert headers["aw-queue"] == workers.queue
    assert "aw-failed-at" in headers
    assert "x-death" not in headers
    assert "x-first-death-queue" not in headers
    assert parked["delivery_mode"] == aio_pika.DeliveryMode.PERSISTENT
    if reason == "handler_error":
        assert headers["aw-error-type"] == "builtins.KeyError"
        assert "the reason" in headers["aw-error-message"]
        assert "raise KeyError" in headers["aw-traceback"]
    if reason == "unknown_handler":
        assert any(
            r.levelno == logging.ERROR and "unknown_handler" in r.getMessage()
            for r in caplog.records
        )


async def test_a_successful_job_is_acked_and_gone(workers: Workers) -> None:
    worker = workers()
    done = asyncio.Event()
    worker.register("h", lambda args: done.set())
    async with worker:
        await worker.perform(Job(handler="h", queue=workers.queue))
        await asyncio.wait_for(done.wait(), GUARD_S)
        await wait_for_state(worker.topology.work_queue(workers.queue), (0, 1))
    assert await queue_state(worker.topology.failed_queue(workers.queue)) == (0, 0)


async def test_stop_hands_prefetched_jobs_back_and_runs_none_twice(workers: Workers) -> None:
    worker = workers(max_concurrency=1, prefetch=10)
    started: list[int] = []
    first = asyncio.Event()

    async def slow(args: dict[str, int]) -> None:
        started.append(args["n"])
        first.set()
        await asyncio.sleep(3600)

    worker.register("slow", slow)
    await worker.start()
    for n in range(5):
        await worker.perform(Job(handler="slow", queue=workers.queue, args={"n": n}))
    await asyncio.wait_for(first.wait(), GUARD_S)
    await asyncio.sleep(0.2)  # let the other four arrive as prefetched deliveries
    await worker.stop(timeout_s=0.1)
    assert len(started) == 1  # only one ever started here
    # All five are back: four never started, one was cancelled by the stop timeout.
    await wait_for_state(worker.topology.work_queue(workers.queue), (5, 0))
    bodies = await drain(worker.topology.work_queue(workers.queue))
    assert sorted(json.loads(b["body"])["args"]["n"] for b in bodies) == [0, 1, 2, 3, 4]


async def test_a_given_connection_is_used_and_not_closed(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the given connection reaches RabbitMQ: a worker that dialled its own fails.
    monkeypatch.setenv("AMQP_WORKER_URL", "amqp://guest:guest@127.0.0.1:1/")
    connection = await aio_pika.connect_robust(BROKER_URL)
    try:
        worker = AMQPWorker(
            connection=connection,
            name=workers.topology.name,
            queues=[workers.queue],
            publish_timeout_s=5,
        )
        workers.made.append(worker)
        done = asyncio.Event()
        worker.register("h", lambda args: done.set())
        async with worker:
            await worker.perform(Job(handler="h", queue=workers.queue))
            await asyncio.wait_for(done.wait(), GUARD_S)
        assert not connection.is_closed
        channel = await connection.channel()  # still usable
        await channel.close()
    finally:
        await connection.close()


@pytest.mark.timeout(60)
async def test_a_blocking_sync_handler_does_not_starve_heartbeats(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    # Heartbeat 1 s: RabbitMQ drops a connection after two missed beats. The handler
    # blocks for 4 s; on the event loop that would kill the connection.
    worker = workers(heartbeat_s=1)
    finished = threading.Event()

    def blocking(args: dict[str, Any]) -> None:
        time.sleep(4)
        finished.set()

    worker.register("blocking", blocking)
    async with worker:
        await worker.perform(Job(handler="blocking", queue=workers.queue))
        await asyncio.to_thread(finished.wait, GUARD_S)
        await wait_for_state(worker.topology.work_queue(workers.queue), (0, 1))
    assert "connection to" not in caplog.text  # never lost
    assert "could not ack" not in caplog.text
