"""The RabbitMQ permissions docs/security.md recommends, proven on a vhost of their own.

A publisher user that may declare and publish but not consume can enqueue
immediate and delayed jobs that a worker user runs, and cannot take a job
out of a work queue.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import aiormq.exceptions
import pytest

from amqp_worker import AccessRefused, AMQPWorker, Job, RetryPolicy
from tests.harness.brokertools import broker_url, rabbitmqctl

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

#: The regular expressions of docs/security.md, for a worker named ``jobs``
#: whose work queues are prefixed ``jobs.``: (configure, write, read).
#: Both write to ``amq.default``, the default exchange: the worker parks jobs
#: and the publisher sends partition_key jobs through it.
WRITE = r"^(jobs(\..*)?|amq\.default)$"
WORKER = (r"^jobs(\..*)?$", WRITE, r"^jobs(\..*)?$")
PUBLISHER = (
    r"^jobs(\..*)?$",
    WRITE,
    r"^jobs(\.due|\.cancels|\.delay\..*|\.partition\..*)?$",
)
#: A user who may declare and publish but read nothing at all.
WRITE_ONLY = (r"^jobs(\..*)?$", r"^jobs(\..*)?$", r"^$")


@pytest.fixture
def vhost() -> Iterator[dict[str, str]]:
    token = uuid.uuid4().hex[:8]
    vhost = f"awtest-perm-{token}"
    users = {
        "worker": f"awtest-w-{token}",
        "publisher": f"awtest-p-{token}",
        "write_only": f"awtest-o-{token}",
    }
    rabbitmqctl("add_vhost", vhost)
    try:
        roles = (("worker", WORKER), ("publisher", PUBLISHER), ("write_only", WRITE_ONLY))
        for role, permissions in roles:
            rabbitmqctl("add_user", users[role], f"pw-{token}")
            rabbitmqctl("set_permissions", "-p", vhost, users[role], *permissions)
        yield {role: broker_url(vhost, user, f"pw-{token}") for role, user in users.items()}
    finally:
        rabbitmqctl("delete_vhost", vhost)  # and everything in it
        for user in users.values():
            rabbitmqctl("delete_user", user)


async def test_a_publisher_enqueues_what_a_worker_runs_and_cannot_consume(
    vhost: dict[str, str],
) -> None:
    options: dict[str, Any] = {"name": "jobs", "queue_prefix": "jobs.", "publish_timeout_s": 10}
    publisher = AMQPWorker(vhost["publisher"], **options)
    worker = AMQPWorker(vhost["worker"], queues=["emails"], **options)
    ran: list[str] = []
    both = asyncio.Event()

    async def send(args: dict[str, Any]) -> None:
        ran.append(args["kind"])
        if len(ran) == 2:
            both.set()

    worker.register("send", send)
    try:
        # Before any worker ran: the publisher declares what its jobs need.
        await publisher.perform(Job(handler="send", queue="emails", args={"kind": "now"}))
        await publisher.perform_in(Job(handler="send", queue="emails", args={"kind": "later"}), 0.2)
        # The publisher may cancel too: it binds and writes the cancellations stream.
        await publisher.cancel("some-job-id")
        async with worker:
            await asyncio.wait_for(both.wait(), 30)
        assert sorted(ran) == ["later", "now"]

        async with await aio_pika.connect(vhost["publisher"]) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("jobs.emails", passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await queue.get(fail=False)
    finally:
        await publisher.stop()


async def test_with_them_a_worker_parks_a_failing_job_and_runs_a_partition_key_job(
    vhost: dict[str, str],
) -> None:
    options: dict[str, Any] = {
        "name": "jobs",
        "queue_prefix": "jobs.",
        "publish_timeout_s": 10,
        "partitions": 2,
    }
    publisher = AMQPWorker(vhost["publisher"], **options)
    worker = AMQPWorker(
        vhost["worker"], queues=["emails"], retry=RetryPolicy(max_retries=0), **options
    )
    ordered = asyncio.Event()

    async def boom(args: dict[str, Any]) -> None:
        raise ValueError("no such mailbox")

    async def send(args: dict[str, Any]) -> None:
        ordered.set()

    worker.register("boom", boom)
    worker.register("send", send)
    try:
        failing = await publisher.perform(Job(handler="boom", queue="emails"))
        await publisher.perform(Job(handler="send", queue="emails", partition_key="account-1"))
        async with worker:
            await asyncio.wait_for(ordered.wait(), 30)
            while not (parked := await worker.failed.list("emails")):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert [job.id for job in parked] == [failing.id]
        assert parked[0].error_message == "no such mailbox"
    finally:
        await publisher.stop()


async def test_a_refused_permission_is_a_typed_error_that_says_which(
    vhost: dict[str, str],
) -> None:
    options: dict[str, Any] = {"name": "jobs", "queue_prefix": "jobs.", "publish_timeout_s": 10}
    # Binding a queue to the jobs exchange needs read on the exchange: refused.
    publisher = AMQPWorker(vhost["write_only"], **options)
    try:
        with pytest.raises(AccessRefused, match=r"declare the work queue of 'emails'.*read"):
            await publisher.perform(Job(handler="send", queue="emails"))
    finally:
        await publisher.stop()
    # Consuming needs read on the queue: refused at start, which leaves nothing running.
    async with AMQPWorker(vhost["worker"], queues=["emails"], **options):
        pass
    consumer = AMQPWorker(vhost["write_only"], queues=["emails"], **options)
    with pytest.raises(AccessRefused, match="ACCESS_REFUSED") as refused:
        await consumer.start()
    assert "pw-" not in str(refused.value)
    assert not consumer.running
