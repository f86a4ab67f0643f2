"""examples/fastapi_app.py: requests enqueue jobs that a worker then runs; an outage is a 503."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from examples.fastapi_app import app
from pydantic import BaseModel

from amqp_worker import AMQPWorker
from amqp_worker._rabbitmq.topology import Topology
from tests.conftest import SESSION_NAME, delete_topology_queues
from tests.harness.brokertools import BROKER_URL, queue_state

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


@pytest.fixture
async def prefix(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    prefix = f"awtest-fastapi-{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("AMQP_WORKER_URL", BROKER_URL)
    monkeypatch.setenv("AMQP_WORKER_NAME", SESSION_NAME)
    monkeypatch.setenv("AMQP_WORKER_QUEUE_PREFIX", prefix)
    yield prefix
    await delete_topology_queues("emails", prefix=prefix)


async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


class Welcome(BaseModel):
    email: str
    name: str


async def test_a_signup_enqueues_a_job_that_a_worker_runs(prefix: str) -> None:
    async with app.router.lifespan_context(app), await client() as http:
        response = await http.post("/signups", json={"email": "ada@example.com", "name": "Ada"})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        bad = await http.post("/signups", json={"email": "not an email", "name": "Ada"})
        assert bad.status_code == 422  # refused at the edge: nothing enqueued
        later = await http.post("/reminders", json={"email": "ada@example.com", "in_s": 0.2})
        assert later.status_code == 202

    worker = AMQPWorker(queues=["emails"])
    got: list[tuple[str, Any]] = []
    done = asyncio.Event()

    async def send_welcome(args: Welcome, job: Any) -> None:
        got.append((job.id, args))
        if len(got) == 2:
            done.set()

    async def send_reminder(args: dict[str, Any]) -> None:
        got.append(("reminder", args))
        if len(got) == 2:
            done.set()

    worker.register("send_welcome", send_welcome)
    worker.register("send_reminder", send_reminder)
    async with worker:
        await asyncio.wait_for(done.wait(), 20)
    assert (job_id, Welcome(email="ada@example.com", name="Ada")) in got
    assert ("reminder", {"email": "ada@example.com"}) in got
    # The refused signup enqueued nothing: no third job ran, waits, or was parked.
    assert len(got) == 2
    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    for queue in (topology.work_queue("emails"), topology.failed_queue("emails")):
        assert await queue_state(queue) == (0, 0), queue


async def test_an_unreachable_broker_is_a_503_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_WORKER_URL", "amqp://guest:s3cret@127.0.0.1:1/")
    monkeypatch.setenv("AMQP_WORKER_PUBLISH_TIMEOUT_S", "1")
    monkeypatch.setenv("AMQP_WORKER_RECONNECT_INTERVAL_S", "0.2")
    async with app.router.lifespan_context(app), await client() as http:
        response = await http.post("/signups", json={"email": "ada@example.com", "name": "Ada"})
    assert response.status_code == 503
    assert response.json() == {"detail": "job queue unavailable, try again"}
    assert "s3cret" not in response.text
