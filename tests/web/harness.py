"""The dashboard served for real (uvicorn on 127.0.0.1) from a loop in a thread, and parked jobs.

Browser tests are plain (sync) functions: selenium blocks while it waits, so
everything asynchronous — the server, the workers, the seeding — runs on a
:class:`~amqp_worker._loop_thread.LoopThread` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
import uvicorn

from amqp_worker import AMQPWorker, Job
from amqp_worker._core.failures import AttemptRecord, FailureReason, failure_headers
from amqp_worker._loop_thread import LoopThread
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.topology import Topology
from amqp_worker.dashboard import Dashboard, DashboardSettings
from tests.harness.brokertools import BROKER_URL, delete_topology

T = TypeVar("T")

CHROMIUM = os.environ.get("AMQP_WORKER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("AMQP_WORKER_CHROMEDRIVER", "/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Background:
    """An event loop in a thread: ``run(coro)`` waits for its result."""

    def __init__(self) -> None:
        self._thread = LoopThread("dashboard-test")

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return self._thread.run(coroutine, timeout_s)

    def close(self) -> None:
        self._thread.close(10.0)


@dataclass
class Served:
    """A dashboard on ``url``, for worker name ``name`` and job queue ``queue``."""

    background: Background
    name: str
    queue: str
    url: str
    dashboard: Dashboard
    server: uvicorn.Server
    workers: list[AMQPWorker] = field(default_factory=list)

    @property
    def settings(self) -> AMQPSettings:
        return self.dashboard.settings

    def worker(self, **options: Any) -> AMQPWorker:
        worker = AMQPWorker(
            BROKER_URL, name=self.name, queues=[self.queue], publish_timeout_s=10, **options
        )
        self.workers.append(worker)
        return worker


def unique_name() -> str:
    return f"awweb{uuid.uuid4().hex[:10]}"


async def _serve(dashboard: Dashboard, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        dashboard, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    for _ in range(200):
        if server.started:
            return server, task
        if task.done():
            break
        await asyncio.sleep(0.05)
    raise RuntimeError("uvicorn did not start")


@contextlib.contextmanager
def served(url: str = BROKER_URL, **options: Any) -> Iterator[Served]:
    """Serve a Dashboard for a fresh worker name; delete its topology afterwards."""
    background = Background()
    name = unique_name()
    queue = f"{name}.emails"
    settings = AMQPSettings.from_url(url, name=name, queues=[queue], publish_timeout_s=10)
    dashboard = Dashboard(settings, DashboardSettings(refresh_s=0.5, **options))
    port = free_port()
    server, task = background.run(_serve(dashboard, port))
    here = Served(background, name, queue, f"http://127.0.0.1:{port}/", dashboard, server)
    try:
        yield here
    finally:

        async def shutdown() -> None:
            for worker in here.workers:
                await worker.stop()
            server.should_exit = True
            await asyncio.wait_for(task, 30)  # its lifespan closes the dashboard
            await delete_topology(Topology(name=name), [queue])

        try:
            background.run(shutdown(), 60.0)
        finally:
            background.close()


async def park(
    settings: AMQPSettings,
    queue: str,
    count: int,
    *,
    handler: str = "send_email",
    error: str = "SMTP server said no",
    reason: FailureReason = FailureReason.HANDLER_ERROR,
) -> list[str]:
    """Put ``count`` parked jobs straight into ``queue``'s failed-jobs queue; their ids."""
    topology = settings.topology
    ids: list[str] = []
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        name = topology.failed_queue(queue)
        await channel.declare_queue(name, durable=True, arguments=topology.failed_queue_arguments())
        for i in range(count):
            try:
                raise RuntimeError(f"{error} (#{i})")
            except RuntimeError as exc:
                history = [AttemptRecord.of(1, exc)]
                headers = failure_headers(reason, queue, exc, history=history)
            job = Job(queue=queue, handler=handler, args={"to": f"user{i}@example.com"})
            await channel.default_exchange.publish(
                aio_pika.Message(
                    job.model_dump_json().encode(),
                    message_id=job.id,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="application/json",
                ),
                routing_key=name,
            )
            ids.append(job.id)
    finally:
        await connection.close()
    return ids
