"""A worker killed with SIGKILL mid-job loses nothing: RabbitMQ redelivers to another worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from amqp_worker import Job
from tests.amqp.conftest import Workers
from tests.harness.brokertools import BROKER_URL

pytestmark = pytest.mark.broker

ROOT = Path(__file__).parent.parent.parent


@pytest.mark.timeout(90)
async def test_kill_9_mid_job_redelivers_to_another_worker(
    workers: Workers, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.amqp.worker_process",
        BROKER_URL,
        workers.topology.name,
        workers.queue,
        str(marker),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        publisher = workers()
        job = Job(handler="slow", queue=workers.queue, args={"important": True})
        await publisher.perform(job)
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.returncode is None, "the worker process died on its own"
            assert time.monotonic() < deadline, "the worker process never started the job"
            await asyncio.sleep(0.05)
        assert marker.read_text() == job.id
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    rescued = asyncio.Event()
    seen: list[Job] = []

    async def slow(args: dict[str, object], job: Job) -> None:
        seen.append(job)
        rescued.set()

    survivor = workers()
    survivor.register("slow", slow)
    async with survivor:
        await asyncio.wait_for(rescued.wait(), 30)
    assert [j.id for j in seen] == [job.id]
    assert seen[0].args == {"important": True}
