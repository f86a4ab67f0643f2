"""examples/limits.py runs as documented, in process and against RabbitMQ."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from amqp_worker import AMQPWorker
from amqp_worker.testing import delete_topology
from tests.harness.brokertools import BROKER_URL

ROOT = Path(__file__).parents[2]


def run_example(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AMQP_WORKER_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "limits.py")],
        env={**base, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    ).stdout


def check(out: str) -> None:
    assert out.count("sms to") == 10
    assert out.count("rendering pdf") == 10
    at_once = [int(n) for n in re.findall(r"\((\d+) at once\)", out)]
    assert max(at_once) <= 2
    assert "all done" in out


@pytest.mark.timeout(120)
def test_limits_example_in_process() -> None:
    check(run_example())


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_limits_example_on_rabbitmq() -> None:
    name = f"awtest-example-{uuid.uuid4().hex[:8]}"
    try:
        check(run_example(AMQP_WORKER_URL=BROKER_URL, AMQP_WORKER_NAME=name))
    finally:
        # A worker with the same limited handlers knows their queues; it is never started.
        worker = AMQPWorker(BROKER_URL, name=name, queues=["limited"])
        worker.register("send_sms", lambda args: None, rate="5/s", burst=2)
        worker.register("render_pdf", lambda args: None, concurrency=2)
        asyncio.run(delete_topology(worker))
