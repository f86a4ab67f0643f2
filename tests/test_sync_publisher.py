"""``amqp_worker.sync.Publisher``: blocking publishes from sync code, against RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from amqp_worker import (
    BrokerUnavailable,
    ConfigurationError,
    Job,
    PublishError,
)
from amqp_worker._rabbitmq.topology import Topology
from amqp_worker.sync import THREAD_NAME, Publisher
from tests.conftest import SESSION_NAME, delete_topology_queues, example_env
from tests.harness.brokertools import BROKER_URL, drain, queue_state

pytestmark = pytest.mark.broker

ROOT = Path(__file__).parent.parent
UNREACHABLE_URL = "amqp://guest:s3cret@127.0.0.1:1/"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A queue prefix no other test uses; its queues are deleted afterwards."""
    prefix = f"awtest-sync-{uuid.uuid4().hex[:8]}."
    yield prefix
    asyncio.run(delete_topology_queues("jobs", "emails", prefix=prefix))


def publisher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def make(prefix: str, **options: Any) -> Publisher:
    return Publisher(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix, **options)


def work_queue(publisher: Publisher, queue: str = "jobs") -> str:
    return publisher.settings.topology.work_queue(queue)


@pytest.mark.timeout(30)
def test_perform_returns_the_id_once_the_job_is_in_its_queue(prefix: str) -> None:
    with make(prefix) as publisher:
        job = Job(handler="h", queue="jobs", args={"n": 1})
        assert publisher.perform(job) == job.id
        [message] = asyncio.run(drain(work_queue(publisher)))
    assert message["message_id"] == job.id
    assert Job.model_validate_json(message["body"]).args == {"n": 1}


@pytest.mark.timeout(30)
def test_perform_in_perform_at_and_perform_many(prefix: str) -> None:
    with make(prefix) as publisher:
        batch = [Job(handler="h", queue="jobs", args={"i": i}) for i in range(5)]
        # Any iterable, read in the caller's thread; ids come back in order.
        assert publisher.perform_many(job for job in batch) == [job.id for job in batch]
        assert publisher.perform_many([]) == []
        later = Job(handler="h", queue="jobs")
        assert publisher.perform_in(later, timedelta(hours=1)) == later.id
        assert publisher.perform_in(Job(handler="h", queue="jobs"), 3600.0)
        assert publisher.perform_at(
            Job(handler="h", queue="jobs"), datetime.now(UTC) + timedelta(1)
        )
        # A time in the past runs as soon as possible: straight to the work queue.
        publisher.perform_at(Job(handler="h", queue="jobs"), datetime.now(UTC) - timedelta(1))
        # The three delayed jobs wait in the delay topology, not in the work queue.
        assert asyncio.run(queue_state(work_queue(publisher))) == (6, 0)


@pytest.mark.timeout(30)
def test_errors_reach_the_caller_with_their_own_types(prefix: str) -> None:
    with make(prefix) as publisher:
        with pytest.raises(ValueError, match="naive") as naive:
            publisher.perform_at(Job(handler="h", queue="jobs"), datetime.now())
        assert type(naive.value) is ValueError
        with pytest.raises(ValueError, match="negative"):
            publisher.perform_in(Job(handler="h", queue="jobs"), -1)
        with pytest.raises(TypeError, match="expected a Job"):
            publisher.perform({"handler": "h"})  # type: ignore[arg-type]
        # The publisher is still usable after errors.
        publisher.perform(Job(handler="h", queue="jobs"))
        assert asyncio.run(queue_state(work_queue(publisher))) == (1, 0)


@pytest.mark.timeout(30)
def test_an_unreachable_broker_raises_broker_unavailable_without_credentials() -> None:
    publisher = Publisher(UNREACHABLE_URL, publish_timeout_s=1, reconnect_interval_s=0.2)
    assert "s3cret" not in repr(publisher)
    with publisher, pytest.raises(BrokerUnavailable) as info:
        publisher.perform(Job(handler="h"))
    assert type(info.value) is BrokerUnavailable
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(publisher)


@pytest.mark.timeout(10)
def test_bad_settings_fail_in_the_constructor_and_start_nothing() -> None:
    before = publisher_threads()
    with pytest.raises(ConfigurationError):
        Publisher("http://127.0.0.1/")
    with pytest.raises(ConfigurationError):
        Publisher(BROKER_URL, publish_timeout_s=-1)
    assert publisher_threads() == before


@pytest.mark.timeout(60)
def test_many_threads_publish_at_once(prefix: str) -> None:
    with make(prefix) as publisher:

        def publish(n: int) -> list[str]:
            return [publisher.perform(Job(handler="h", queue="jobs")) for _ in range(20)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = [job_id for batch in pool.map(publish, range(8)) for job_id in batch]
        assert len(set(ids)) == 160
        assert len(publisher_threads()) >= 1
        assert asyncio.run(queue_state(work_queue(publisher))) == (160, 0)


@pytest.mark.timeout(30)
def test_on_publish_hooks_see_the_callers_contextvars(prefix: str) -> None:
    with make(prefix) as publisher:

        @publisher.hooks.on_publish
        def tag(job: Job, headers: dict[str, Any]) -> None:
            headers["x-request-id"] = request_id.get()

        def view(rid: str) -> str:
            request_id.set(rid)
            return publisher.perform(Job(handler="h", queue="jobs"))

        with ThreadPoolExecutor(max_workers=2) as pool:
            ids = dict(zip(pool.map(view, ["req-a", "req-b"]), ["req-a", "req-b"], strict=True))
        messages = asyncio.run(drain(work_queue(publisher)))
    assert {m["message_id"]: m["headers"]["x-request-id"] for m in messages} == ids


@pytest.mark.timeout(30)
async def test_calling_it_from_an_event_loop_is_refused(prefix: str) -> None:
    before = publisher_threads()
    publisher = make(prefix)
    with pytest.raises(RuntimeError, match="use AMQPWorker"):
        publisher.perform(Job(handler="h", queue="jobs"))
    with pytest.raises(RuntimeError, match="use AMQPWorker"):
        publisher.perform_many([Job(handler="h", queue="jobs")])
    assert publisher_threads() == before  # refused before anything started
    # From another thread it works, even with a loop running here; close() may run here.
    job_id = await asyncio.to_thread(publisher.perform, Job(handler="h", queue="jobs"))
    publisher.close()
    [message] = await drain(work_queue(publisher))
    assert message["message_id"] == job_id
    assert publisher_threads() == before


@pytest.mark.timeout(30)
def test_the_thread_starts_on_first_use_and_close_ends_it(prefix: str) -> None:
    before = publisher_threads()
    publisher = make(prefix)
    assert publisher_threads() == before
    assert "idle" in repr(publisher)
    publisher.perform(Job(handler="h", queue="jobs"))
    assert len(publisher_threads()) == len(before) + 1
    assert "open" in repr(publisher)
    # No public way to the worker (its start() would consume on the wrong loop): peek.
    assert publisher._worker.connected
    publisher.close()
    assert not publisher._worker.connected
    assert publisher_threads() == before
    assert publisher.closed
    assert "closed" in repr(publisher)


@pytest.mark.timeout(30)
def test_close_is_idempotent_and_later_calls_are_refused(prefix: str) -> None:
    before = publisher_threads()
    publisher = make(prefix)
    publisher.perform(Job(handler="h", queue="jobs"))
    publisher.close()
    publisher.close()
    publisher.close(timeout_s=0)
    for call in (
        lambda: publisher.perform(Job(handler="h", queue="jobs")),
        lambda: publisher.perform_in(Job(handler="h", queue="jobs"), 1),
        lambda: publisher.perform_at(Job(handler="h", queue="jobs"), datetime.now(UTC)),
        lambda: publisher.perform_many([Job(handler="h", queue="jobs")]),
    ):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    never_used = make(prefix)
    never_used.close()
    never_used.close()
    with pytest.raises(RuntimeError, match="closed"):
        never_used.perform(Job(handler="h", queue="jobs"))
    with pytest.raises(ValueError, match="timeout_s"):
        make(prefix).close(timeout_s=-1)
    assert publisher_threads() == before


@pytest.mark.timeout(30)
def test_close_waits_for_calls_in_progress(prefix: str) -> None:
    before = publisher_threads()
    publisher = make(prefix)
    publishing = threading.Event()
    proceed = threading.Event()

    @publisher.hooks.on_publish
    def pause(job: Job, headers: dict[str, Any]) -> None:
        # Runs on the publisher's loop: holds the call in progress until close() began.
        publishing.set()
        proceed.wait(10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(publisher.perform, Job(handler="h", queue="jobs"))
        assert publishing.wait(10)
        closing = threading.Thread(target=publisher.close, kwargs={"timeout_s": None})
        closing.start()
        proceed.set()
        closing.join()
        job_id = call.result()
    [message] = asyncio.run(drain(work_queue(publisher)))
    assert message["message_id"] == job_id
    assert publisher_threads() == before


@pytest.fixture
def silent_broker_url() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: connects hang."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}/"
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.timeout(60)
def test_close_gives_up_on_calls_still_in_progress_after_timeout_s(silent_broker_url: str) -> None:
    publisher = Publisher(silent_broker_url, publish_timeout_s=2, reconnect_interval_s=0.2)
    publishing = threading.Event()
    publisher.hooks.on_publish(lambda job, headers: publishing.set())
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(publisher.perform, Job(handler="h"))
        assert publishing.wait(10)  # the call is now connecting, and the connect hangs
        publisher.close(timeout_s=0)
        with pytest.raises(PublishError, match="closed before the broker confirmed") as info:
            call.result()
    assert len(info.value.job_ids) == 1
    # The publish was not cancelled: it ends by itself (BrokerUnavailable, within
    # publish_timeout_s), then the thread closes the worker and ends.
    for thread in publisher_threads():
        thread.join()
    assert not publisher._worker.connected


@pytest.mark.timeout(30)
def test_a_publisher_started_before_a_fork_refuses_to_work(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with make(prefix) as publisher:
        publisher.perform(Job(handler="h", queue="jobs"))
        parent_pid = os.getpid()
        with monkeypatch.context() as patched:
            # What a forked child sees: the thread belongs to another process.
            patched.setattr("amqp_worker._loop_thread.os.getpid", lambda: parent_pid + 1)
            with pytest.raises(RuntimeError, match="another process"):
                publisher.perform(Job(handler="h", queue="jobs"))
        assert asyncio.run(queue_state(work_queue(publisher))) == (1, 0)


@pytest.mark.timeout(30)
def test_hooks_and_settings_are_exposed_not_the_worker(prefix: str) -> None:
    with make(prefix, publish_timeout_s=7) as publisher:
        # The worker's start() would consume on the wrong loop: it is not exposed.
        assert not hasattr(publisher, "worker")
        assert publisher.settings.publish_timeout_s == 7
        assert publisher.settings.queue_prefix == prefix
        with pytest.raises(ValidationError, match="frozen"):
            publisher.settings.publish_timeout_s = 1  # type: ignore[misc]
        publisher.hooks.on_publish(lambda job, headers: headers.update({"x-tag": "t"}))
        job_id = publisher.perform(Job(handler="h", queue="jobs"))
        [message] = asyncio.run(drain(work_queue(publisher)))
    assert message["message_id"] == job_id
    assert message["headers"]["x-tag"] == "t"


#: Publishes and exits without close(): the interpreter must still exit.
FORGOTTEN_CLOSE = """
from amqp_worker import Job
from amqp_worker.sync import Publisher

publisher = Publisher()
print("enqueued job", publisher.perform(Job(queue="jobs", handler="h")), flush=True)
"""


@pytest.mark.timeout(60)
def test_a_forgotten_close_does_not_keep_the_process_alive(prefix: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORGOTTEN_CLOSE],
        env=example_env(prefix),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split()[-1]
    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    [message] = asyncio.run(drain(topology.work_queue("jobs")))
    assert message["message_id"] == job_id


@pytest.mark.timeout(60)
def test_the_example_enqueues_from_sync_code(prefix: str) -> None:
    env = example_env(prefix)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sync_publisher.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ids = [line.split()[-1] for line in lines if line.startswith("enqueued job ")]
    assert len(ids) == 5
    assert len(set(ids)) == 5
    assert "5 signups enqueued from 4 threads, each with a delayed digest" in result.stdout
    topology = Topology(name=SESSION_NAME, queue_prefix=prefix)
    messages = asyncio.run(drain(topology.work_queue("emails")))
    assert sorted(m["message_id"] for m in messages) == sorted(ids)
