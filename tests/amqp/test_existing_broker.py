"""Fitting into a RabbitMQ that already exists: vhosts, names, and no leaked credentials."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job
from tests.harness.brokertools import broker_url, queue_state

pytestmark = pytest.mark.broker


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def vhost() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed here: cannot create a test vhost")
    name = f"awtest-vhost-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.mark.timeout(90)
async def test_a_vhost_from_the_url(vhost: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = broker_url(vhost)
    worker = AMQPWorker(url, queues=["jobs.emails"])
    assert f"vhost={vhost}" in worker.settings.broker
    done = asyncio.Event()
    got: list[dict[str, Any]] = []

    async def h(args: dict[str, Any]) -> None:
        got.append(args)
        done.set()

    worker.register("h", h)
    async with worker:
        await worker.perform(Job(handler="h", queue="jobs.emails", args={"in": vhost}))
        await asyncio.wait_for(done.wait(), 20)
    assert got == [{"in": vhost}]
    # It ran through that vhost, not the default one: its queue is there, acked empty.
    assert await queue_state(worker.topology.work_queue("jobs.emails"), url=url) == (0, 0)
    assert "guest:guest" not in caplog.text


@pytest.mark.timeout(30)  # not retried for publish_timeout_s (60 s): waiting can't fix it
@pytest.mark.parametrize("missing", [False, True], ids=["forbidden", "missing"])
async def test_a_forbidden_or_missing_vhost_is_a_clear_error_at_once(
    vhost: str, missing: bool
) -> None:
    from amqp_worker import BrokerUnavailable

    rabbitmqctl("clear_permissions", "-p", vhost, "guest")
    name = f"{vhost}-nope" if missing else vhost
    worker = AMQPWorker(broker_url(name), publish_timeout_s=60)
    with pytest.raises(BrokerUnavailable, match="refused the vhost") as info:
        await worker.perform(Job(handler="h"))
    assert "guest:guest" not in str(info.value)
    await worker.stop()


@pytest.mark.timeout(20)  # a refused login is not retried for publish_timeout_s (60 s)
async def test_a_wrong_password_is_refused_at_once_without_echoing_it() -> None:
    from amqp_worker import BrokerUnavailable

    worker = AMQPWorker(broker_url(password="not-the-pw"), publish_timeout_s=60)
    with pytest.raises(BrokerUnavailable, match="refused the login") as info:
        await worker.perform(Job(handler="h"))
    assert "not-the-pw" not in str(info.value)
    await worker.stop()


@pytest.mark.timeout(30)
async def test_a_perform_cancelled_while_connecting_leaves_nothing_running() -> None:
    import socket

    # A server that accepts TCP and never speaks AMQP: the connect hangs.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        worker = AMQPWorker(f"amqp://guest:guest@127.0.0.1:{port}/", publish_timeout_s=60)
        before = asyncio.all_tasks()
        attempt = asyncio.ensure_future(worker.perform(Job(handler="h")))
        await asyncio.sleep(0.3)
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        await asyncio.sleep(0.3)
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        left.discard(asyncio.current_task())  # type: ignore[arg-type]
        assert not left, left
        await worker.stop()
