"""``amqp_worker.sync.Publisher``: blocking publishes from sync code, against RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from amqp_worker import BrokerUnavailable, Job
from amqp_worker.sync import Publisher
from amqp_worker.topology import Topology
from tests.brokertools import BROKER_URL, delete_queues, drain, queue_state
from tests.conftest import SESSION_NAME

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

ROOT = Path(__file__).parent.parent


@pytest.fixture
def prefix() -> Iterator[str]:
    """A queue prefix no other test uses; its queues are deleted afterwards."""
    prefix = f"awtest-sync-{uuid.uuid4().hex[:8]}."
    yield prefix
    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    names = [
        name(queue)
        for queue in ("jobs", "emails")
        for name in (topology.work_queue, topology.due_queue, topology.failed_queue)
    ]
    asyncio.run(delete_queues(names))


def publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "amqp-worker-publisher"]


def test_perform_blocks_until_confirmed_and_returns_the_id(prefix: str) -> None:
    with Publisher(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix) as publisher:
        job = Job(handler="h", queue="jobs", args={"n": 1})
        assert publisher.perform(job) == job.id
        assert "guest" not in repr(publisher)
        work = publisher.worker.topology.work_queue("jobs")
        [message] = asyncio.run(drain(work))
    assert Job.model_validate_json(message["body"]).args == {"n": 1}


def test_delays_and_many(prefix: str) -> None:
    with Publisher(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix) as publisher:
        ids = publisher.perform_many(Job(handler="h", queue="jobs") for _ in range(5))
        assert len(set(ids)) == 5
        publisher.perform_in(Job(handler="h", queue="jobs"), timedelta(hours=1))
        publisher.perform_in(Job(handler="h", queue="jobs"), 3600.0)
        publisher.perform_at(Job(handler="h", queue="jobs"), datetime.now(UTC) - timedelta(1))
        work = publisher.worker.topology.work_queue("jobs")
        # The past perform_at runs now; the delayed two wait in the delay topology.
        assert asyncio.run(queue_state(work)) == (6, 0)


def test_errors_reach_the_caller_with_their_types(prefix: str) -> None:
    with Publisher(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix) as publisher:
        with pytest.raises(ValueError, match="naive"):
            publisher.perform_at(Job(handler="h", queue="jobs"), datetime.now())
        with pytest.raises(ValueError, match="negative"):
            publisher.perform_in(Job(handler="h", queue="jobs"), -1)
    unreachable = Publisher(
        "amqp://guest:s3cret@127.0.0.1:1/", publish_timeout_s=1, reconnect_interval_s=0.2
    )
    with unreachable, pytest.raises(BrokerUnavailable) as info:
        unreachable.perform(Job(handler="h"))
    assert "s3cret" not in str(info.value)


def test_many_threads_publish_at_once(prefix: str) -> None:
    with Publisher(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix) as publisher:

        def publish(n: int) -> list[str]:
            return [publisher.perform(Job(handler="h", queue="jobs")) for _ in range(20)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = [job_id for batch in pool.map(publish, range(8)) for job_id in batch]
        assert len(set(ids)) == 160
        work = publisher.worker.topology.work_queue("jobs")
        assert asyncio.run(queue_state(work)) == (160, 0)


async def test_calling_it_from_an_event_loop_is_refused() -> None:
    with Publisher(BROKER_URL) as publisher, pytest.raises(RuntimeError, match="use AMQPWorker"):
        publisher.perform(Job(handler="h"))


def test_close_is_idempotent_ends_the_thread_and_refuses_later_calls() -> None:
    before = len(publisher_threads())
    publisher = Publisher(BROKER_URL)
    assert len(publisher_threads()) == before + 1
    publisher.close()
    publisher.close()
    assert len(publisher_threads()) == before
    assert "closed" in repr(publisher)
    with pytest.raises(RuntimeError, match="closed"):
        publisher.perform(Job(handler="h"))


def test_the_example(prefix: str) -> None:
    env = {
        **os.environ,
        "AMQP_WORKER_URL": BROKER_URL,
        "AMQP_WORKER_NAME": SESSION_NAME,
        "AMQP_WORKER_QUEUE_PREFIX": prefix,
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sync_publisher.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert "'status': 'accepted'" in out
    assert "4 more signups enqueued from 4 threads" in out
    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    assert asyncio.run(queue_state(topology.work_queue("emails"))) == (5, 0)
