"""``amqp-worker limits MODULE:ATTR``: a fleet's limited handlers, their limits, jobs waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job
from amqp_worker.cli import ExitCode
from amqp_worker.testing import delete_topology
from tests.cli.conftest import Broker
from tests.harness.brokertools import BROKER_URL

pytestmark = pytest.mark.broker

APP = "tests.cli.limits_app:worker"


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by handler (the first line names the broker)."""
    lines = out.splitlines()[2:]
    return {line.split()[0]: line.split()[1:] for line in lines if line.strip()}


@pytest.mark.timeout(120)
async def test_limits_shows_each_limited_handler_and_the_jobs_waiting_for_it(
    broker: Broker,
) -> None:
    env = {"AW_CLI_TEST_QUEUE": broker.queue}
    before = await asyncio.to_thread(broker, "limits", APP, **env)
    assert before.returncode == ExitCode.OK, before.stderr
    assert rows(before.stdout) == {
        "capped": ["-", "-", "1", "-", "-", "-", "-", "-"],
        "keyed": ["10/min", "-", "-", "tenant", "-", "-", "-", "-"],
        "rated": ["5/s", "2", "-", "-", "-", "-", "-", "-"],
    }
    worker = AMQPWorker(BROKER_URL, name=broker.name, queues=[broker.queue])
    release = asyncio.Event()

    async def capped(args: dict[str, Any]) -> None:
        await release.wait()

    worker.register("capped", capped, concurrency=1)
    worker.register("rated", lambda args: None, rate="5/s", burst=2)
    try:
        async with worker:
            for _ in range(3):
                await worker.perform(Job(handler="capped", queue=broker.queue))
            # One runs (its lane's one unacked job); two wait in the broker.
            for _ in range(200):
                out = (await asyncio.to_thread(broker, "limits", APP, **env)).stdout
                if rows(out)["capped"][4] == "2":
                    break
                await asyncio.sleep(0.1)
            capped_row, rated_row = rows(out)["capped"], rows(out)["rated"]
            assert capped_row == ["-", "-", "1", "-", "2", "-", "1", "-"]
            assert rated_row[:5] == ["5/s", "2", "-", "-", "0"]
            assert rated_row[6:] == ["1", "yes"]
            release.set()
    finally:
        await delete_topology(worker)


def test_limits_of_a_worker_without_limited_handlers_exits_1(broker: Broker) -> None:
    result = broker("limits", "tests.cli.app:worker")
    assert result.returncode == ExitCode.FAILURE
    assert "no handler with a rate or concurrency limit" in result.stderr


def test_limits_of_a_simple_worker_is_a_config_error(broker: Broker) -> None:
    result = broker("limits", "tests.cli.app:simple")
    assert result.returncode == ExitCode.CONFIG
    assert "name an AMQPWorker" in result.stderr
