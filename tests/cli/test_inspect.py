"""``amqp-worker enqueue``, ``queues`` and ``check`` against RabbitMQ."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from amqp_worker.cli import ExitCode
from tests.cli.conftest import COMMAND, ROOT, Broker
from tests.harness.brokertools import BROKER_ADDRESS, BROKER_URL

pytestmark = pytest.mark.broker


def _rows(out: str) -> dict[str, list[str]]:
    """The table rows of ``amqp-worker queues`` by queue name."""
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("QUEUE")))
    return {line.split()[0]: line.split()[1:] for line in lines[header + 1 : -1]}


@pytest.mark.timeout(90)
def test_enqueue_then_queues_shows_the_counts(broker: Broker) -> None:
    unused = broker.new_queue()
    now_ids = [broker.enqueue("touch", {"n": n}) for n in range(2)]
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    now_ids.append(broker.enqueue("touch", {}, "--at", past))  # in the past: runs at once
    broker.enqueue("touch", {}, "--in", "1h")  # waits in the delay queues
    broker.enqueue("touch", {}, "--in", "200ms")  # short: straight to the due queue
    assert len(set(now_ids)) == 3
    out = broker.ok("queues", "-q", broker.queue, "-q", unused)
    assert out.splitlines()[0] == f"amqp://{BROKER_ADDRESS} vhost=/ name={broker.name}"
    unacked = "0" if shutil.which("rabbitmqctl") else "-"
    # ready, unacked, due, failed (never declared by a publisher), consumers
    assert _rows(out) == {
        broker.queue: ["3", unacked, "1", "-", "0"],
        unused: ["-", "-", "-", "-", "-"],
    }
    assert out.splitlines()[-1].startswith("delayed: 1 ")


@pytest.mark.timeout(60)
def test_enqueue_prints_only_the_id(broker: Broker) -> None:
    result = broker("enqueue", "-q", broker.queue, "-H", "touch", "--args", '{"a": [1, 2]}')
    assert result.returncode == ExitCode.OK
    job_id = result.stdout.strip()
    assert len(job_id) == 36
    assert result.stdout == f"{job_id}\n"


@pytest.mark.timeout(60)
def test_queues_watch_refreshes_until_ctrl_c(broker: Broker) -> None:
    out = broker.out / "watch.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [*COMMAND, "queues", "-q", broker.queue, "--watch", "--interval", "0.2"],
            env=broker.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while out.read_text().count("QUEUE") < 2:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == ExitCode.OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert text.count("(every 0.2s, ") >= 2
    assert "\033[" not in text  # no screen clearing when the output is not a terminal
    assert "Traceback" not in text


@pytest.mark.timeout(150)
def test_check_passes_only_once_a_worker_declared_the_queues(broker: Broker) -> None:
    topology = broker.topology
    work, due, failed = (
        topology.work_queue(broker.queue),
        topology.due_queue(broker.queue),
        topology.failed_queue(broker.queue),
    )
    fresh = broker("check", "-q", broker.queue)
    assert fresh.returncode == ExitCode.FAILURE
    assert fresh.stdout.splitlines() == [
        f"amqp://{BROKER_ADDRESS} vhost=/: reachable",
        f"{broker.queue}: missing work queue {work!r}, due queue {due!r}, failed queue {failed!r}",
    ]

    broker.enqueue("touch")  # a publisher declares the work queue only
    published = broker("check", "-q", broker.queue)
    assert published.returncode == ExitCode.FAILURE
    assert published.stdout.splitlines()[1] == (
        f"{broker.queue}: missing due queue {due!r}, failed queue {failed!r}"
    )

    proc = broker.daemon()
    broker.wait_started(proc)
    assert broker.stop(proc) == ExitCode.OK
    assert broker.ok("check", "-q", broker.queue).splitlines()[1] == f"{broker.queue}: ok"
    # AMQP_WORKER_QUEUES is the default, and every queue is checked.
    other = broker.new_queue()
    both = broker("check", AMQP_WORKER_QUEUES=f"{broker.queue},{other}")
    assert both.returncode == ExitCode.FAILURE
    assert both.stdout.splitlines()[1:] == [
        f"{broker.queue}: ok",
        f"{other}: missing work queue {other!r}, due queue {topology.due_queue(other)!r}, "
        f"failed queue {topology.failed_queue(other)!r}",
    ]


def test_every_command_takes_a_list_of_cluster_nodes(broker: Broker) -> None:
    # The first node is down: each command dials the next one and says where it is.
    nodes = f"amqp://guest:guest@127.0.0.1:1/,{broker.env['AMQP_WORKER_URL']}"
    job_id = broker("enqueue", "-q", broker.queue, "-H", "touch", AMQP_WORKER_URL=nodes)
    assert job_id.returncode == 0, job_id.stderr
    checked = broker("check", "-q", broker.queue, AMQP_WORKER_URL=nodes)
    assert f"reachable (on amqp://{BROKER_ADDRESS} vhost=/)" in checked.stdout
    shown = broker("queues", "-q", broker.queue, AMQP_WORKER_URL=nodes)
    assert shown.returncode == 0, shown.stderr
    assert "guest:guest" not in checked.stdout + checked.stderr + shown.stdout + shown.stderr


def test_schedules_reports_a_status_message_it_cannot_read_without_a_traceback(
    broker: Broker,
) -> None:
    topology = broker.topology
    name = topology.schedule_status_queue

    async def put_garbage() -> None:
        async with await aio_pika.connect(BROKER_URL) as connection:
            channel = await connection.channel()
            await channel.declare_queue(
                name, durable=True, arguments=topology.schedule_status_queue_arguments()
            )
            await channel.default_exchange.publish(
                aio_pika.Message(b'{"leader": 1, "schedules": "none"}'), name
            )

    asyncio.run(put_garbage())
    result = broker("schedules")
    assert result.returncode == ExitCode.FAILURE
    assert "unreadable schedule status" in result.stderr
    assert "not a schedule status message" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
