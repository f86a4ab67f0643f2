"""The examples in examples/ run as documented."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from amqp_worker._rabbitmq.topology import Topology
from tests.conftest import delete_topology_queues, example_env
from tests.harness.brokertools import delete_queues, delete_topology, queue_state

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(60)
def test_quickstart_runs_with_the_in_process_worker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_WORKER_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert "in-process SimpleWorker" in out
    assert "all 4 jobs ran" in out


@pytest.mark.timeout(60)
def test_schedules_example_runs_its_heartbeat_in_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_WORKER_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "schedules.py"), "--ticks", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert out.count("heartbeat heartbeat@") == 2


WORKFLOW_LINES = [
    "result: order 7 totals 750 cents",
    "chain: fetch -> total = 10",
    "group: squares [1, 4, 9, 16, 25], sum 55",
    "group: callback ran for squares; state finished, 5/5 succeeded",
    "workflows example done",
]


@pytest.mark.timeout(60)
def test_workflows_example_runs_with_the_in_process_worker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_WORKER_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "workflows.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert "in-process SimpleWorker" in out
    for line in WORKFLOW_LINES:
        assert line in out, out


@pytest.mark.broker
@pytest.mark.timeout(90)
async def test_workflows_example_against_rabbitmq_leaves_one_stream_and_no_group_queue() -> None:
    # A worker name of its own: the results stream is per name, and this test deletes it.
    name = f"awtest-wf-{uuid.uuid4().hex[:8]}"
    env = {**example_env(""), "AMQP_WORKER_NAME": name}
    topology = Topology(name=name)
    group_queue: str | None = None
    try:
        out = await run_example(env, "workflows.py")
        assert "using RabbitMQ" in out
        for line in WORKFLOW_LINES:
            assert line in out, out
        found = re.search(r"group (squares-[0-9a-f]{8}): 5 members", out)
        assert found is not None, out
        group_queue = topology.group_queue(found[1])
        assert await queue_state(group_queue) is None  # deleted once the callback went
        # One stream holds every result and the finished group's record (a passive
        # declare of a stream counts no messages: it only says the stream is there).
        assert await queue_state(topology.results_stream) is not None
    finally:
        await delete_topology(topology, ["workflows"])
        await delete_queues([topology.results_stream, *([group_queue] if group_queue else [])])


@pytest.mark.broker
@pytest.mark.timeout(90)
async def test_schedules_example_and_the_schedules_command_against_rabbitmq() -> None:
    prefix = f"awtest-ex-{uuid.uuid4().hex[:8]}."
    env = example_env(prefix)
    try:
        out = await run_example(env, "schedules.py", "--ticks", "2")
        assert out.count("heartbeat heartbeat@") == 2
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "amqp_worker.cli",
            "schedules",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        table, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, table.decode()
        text = table.decode()
        assert "leader:" in text
        assert "heartbeat" in text
        assert "every 2s" in text
        assert "cron 0 2 * * * Europe/Berlin" in text
    finally:
        await delete_topology_queues("periodic", prefix=prefix)


@pytest.mark.broker
@pytest.mark.timeout(90)
async def test_publisher_then_consumer_against_rabbitmq() -> None:
    prefix = f"awtest-ex-{uuid.uuid4().hex[:8]}."
    env = example_env(prefix)
    try:
        await run_example(env, "publisher.py")
        out = await run_example(env, "consumer.py", "--until", "13")
        assert "sent email to user 123" in out
        assert "welcomed Ada (user 7" in out
        assert out.count("sent email") == 12
    finally:
        await delete_topology_queues("emails", prefix=prefix)


@pytest.mark.broker
@pytest.mark.timeout(120)
async def test_processes_example_renders_reports_in_two_processes() -> None:
    prefix = f"awtest-ex-{uuid.uuid4().hex[:8]}."
    env = example_env(prefix)
    try:
        out = await run_example(env, "processes.py", "--jobs", "12")
        # Which processes render them is a race (the first child up may take all 12);
        # tests/cli/test_processes.py shows the work shared once both children run.
        assert re.search(r"12 reports rendered by [12] processes; daemon exit 0", out), out
    finally:
        await delete_topology_queues("reports", prefix=prefix)


async def run_example(env: dict[str, str], script: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / script),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    return out.decode()
