"""Messages that other clients send and this one could not re-publish as they are: each is settled.

Every path that settles a message (park, retry, re-delay, quarantine) ends in
an ack after a confirmed re-publish, whatever the headers and body hold.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel

from amqp_worker import FailureReason, Job
from tests.amqp.conftest import Workers
from tests.harness.brokertools import publish_raw, queue_state

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


class Typed(BaseModel):
    n: int


async def wait_parked(worker: object, count: int) -> list[object]:
    for _ in range(300):
        found = await worker.failed.list()  # type: ignore[attr-defined]
        if len(found) >= count:
            return list(found)
        await asyncio.sleep(0.05)
    raise AssertionError("not parked")


async def test_hostile_bodies_and_headers_are_parked_or_run_never_stuck(workers: Workers) -> None:
    worker = workers()
    ran = asyncio.Event()

    async def typed(args: Typed) -> None:
        ran.set()

    worker.register("typed", typed)
    async with worker:
        exchange, queue = worker.topology.exchange, workers.queue
        # An attempt beyond what the aw-attempt header can carry: not a valid job.
        huge = {"handler": "typed", "queue": queue, "args": {"n": 1}, "attempt": 2**64}
        await publish_raw(exchange, queue, json.dumps(huge).encode())
        # Args that break the handler's model, with headers nested as other clients nest them.
        bad = {"handler": "typed", "queue": queue, "args": {"n": "many"}}
        await publish_raw(
            exchange,
            queue,
            json.dumps(bad).encode(),
            headers={"tenant": {"name": "acme", "tags": ["a", {"deep": 2**62}]}},
        )
        # A due time no clock will reach, on the due queue: it runs now, not round forever.
        fine = Job(handler="typed", queue=queue, args={"n": 3})
        await publish_raw(
            "", worker.topology.due_queue(queue), fine.to_json(), headers={"aw-due-ms": 2**62}
        )
        await asyncio.wait_for(ran.wait(), 30)
        parked = {record.reason for record in await wait_parked(worker, 2)}
        assert parked == {FailureReason.INVALID_JOB, FailureReason.INVALID_ARGS}
    # Stopped: anything still unacked would be back in its queue now.
    for name in (worker.topology.work_queue(queue), worker.topology.due_queue(queue)):
        state = await queue_state(name)
        assert state is not None
        assert state[0] == 0, name  # (ready messages, consumers)


async def test_an_oversized_delivery_is_parked_as_too_large_without_decoding(
    workers: Workers,
) -> None:
    worker = workers(max_message_bytes=1000)
    async with worker:
        # Another client's body, far over the worker's limit (and not even JSON).
        await publish_raw(worker.topology.exchange, workers.queue, b"[" * 5000)
        [parked] = await wait_parked(worker, 1)
    assert parked.reason is FailureReason.TOO_LARGE  # type: ignore[attr-defined]
    assert "over max_message_bytes" in parked.error_message  # type: ignore[attr-defined]
