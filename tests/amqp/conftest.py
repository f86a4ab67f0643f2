"""Fixtures for broker-specific tests: unique names per test, cleaned up afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aio_pika
import pytest

from amqp_worker import AMQPWorker
from amqp_worker._rabbitmq.topology import Topology
from tests.conftest import SESSION_NAME
from tests.harness.brokertools import BROKER_URL, delete_queues
from tests.harness.leakwatch import LeakWatch, SecretUser

NAME = SESSION_NAME


class Workers:
    """Makes AMQPWorkers on unique queues and stops and deletes everything afterwards."""

    def __init__(self) -> None:
        self.queue = f"q.{uuid.uuid4().hex[:10]}"
        self.topology = Topology(name=NAME)
        self.made: list[AMQPWorker] = []
        self.extra_queues: list[str] = []

    def __call__(self, **options: Any) -> AMQPWorker:
        options.setdefault("queues", [self.queue])
        options.setdefault("publish_timeout_s", 10)
        worker = AMQPWorker(options.pop("url", BROKER_URL), name=NAME, **options)
        self.made.append(worker)
        return worker

    async def full_queue(self, max_length: int) -> str:
        """A queue that holds ``max_length`` messages and nacks every publish beyond them."""
        name = f"full.{uuid.uuid4().hex[:8]}"
        self.extra_queues.append(name)
        async with await aio_pika.connect(BROKER_URL) as connection:
            channel = await connection.channel()
            arguments: dict[str, Any] = {"x-max-length": max_length, "x-overflow": "reject-publish"}
            await channel.declare_queue(name, durable=True, arguments=arguments)
        return name

    async def close(self) -> None:
        for worker in self.made:
            await worker.stop(timeout_s=0)
        queues = {self.queue, *(q for w in self.made for q in w.settings.queues)}
        names = [name for q in queues for name in self.topology.queues_of(q)]
        await delete_queues([*names, *self.extra_queues])


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    made = Workers()
    try:
        yield made
    finally:
        await made.close()


WorkerFactory = Callable[..., AMQPWorker]


@pytest.fixture(scope="session")
def secret_user() -> Iterator[SecretUser]:
    """A broker user with a unique password, for runs whose output is searched for it."""
    user = SecretUser.create()
    try:
        yield user
    finally:
        user.delete()


@pytest.fixture
def leak_watch(secret_user: SecretUser, capfd: pytest.CaptureFixture[str]) -> Iterator[LeakWatch]:
    """Keeps every log record, stdout/stderr line and ``see()``-n object; fails on the password."""
    watch = LeakWatch(secret_user.password)
    handler = watch.start()
    try:
        yield watch
    finally:
        watch.stop(handler)
        out, err = capfd.readouterr()
        watch.texts += [out, err]
        watch.check()
