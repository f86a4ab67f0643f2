"""Handlers that block for three heartbeats, on the shared broker, as a user whose password is watched.

A sync handler blocks a thread, never the event loop: the connection stays up.
An async handler that calls ``time.sleep`` blocks the loop itself: the loop
watchdog names it, the connection may drop, and the job still runs and is
acked (if the connection dropped, RabbitMQ hands the job out again).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from amqp_worker import AMQPWorker, Job
from tests.amqp.conftest import Workers
from tests.harness.brokertools import queue_state
from tests.harness.leakwatch import LeakWatch, SecretUser

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

HEARTBEAT_S = 1
#: Three heartbeats: RabbitMQ gives up on a peer after two silent ones.
BLOCK_S = 3 * HEARTBEAT_S
GUARD_S = 30.0

LOST = ("connection to", "reconnected to")


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll ``condition()`` until true; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def settled(worker: AMQPWorker, queue: str) -> dict[str, tuple[int, int] | None]:
    """(ready, consumers) of ``queue``'s work, quarantine and failed queues."""
    topology = worker.topology
    return {
        name: await queue_state(name)
        for name in (
            topology.work_queue(queue),
            topology.quarantine_queue(queue),
            topology.failed_queue(queue),
        )
    }


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # Only amqp_worker's records: some of aio-pika's cannot format themselves after the fact.
    return [r for r in caplog.records if r.name == "amqp_worker"]


def transport(worker: AMQPWorker) -> object:
    """The AMQP connection under the worker's robust connection: a new object after a reconnect."""
    connection = worker._broker.connection
    assert connection is not None
    return getattr(connection, "transport", None)


async def test_a_sync_handler_blocking_for_three_heartbeats_keeps_the_connection(
    workers: Workers,
    secret_user: SecretUser,
    leak_watch: LeakWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="amqp_worker")
    worker = workers(url=secret_user.url(), heartbeat_s=HEARTBEAT_S, loop_stall_warn_s=0.5)
    leak_watch.see(worker, worker.settings)
    runs: list[str] = []
    finished = threading.Event()

    def blocks_a_thread(args: dict[str, Any], job: Job) -> None:
        runs.append(job.id)
        time.sleep(BLOCK_S)
        finished.set()

    worker.register("blocks_a_thread", blocks_a_thread)
    job = Job(handler="blocks_a_thread", queue=workers.queue)
    async with worker:
        before = transport(worker)
        assert before is not None
        await worker.perform(job)
        await eventually(finished.is_set)
        await eventually(lambda: worker._pool.running == 0)  # acked: its task has ended
        assert worker.connected
        assert transport(worker) is before  # the same AMQP connection: never reconnected
        leak_watch.see(worker)
    states = await settled(worker, workers.queue)
    assert states[worker.topology.work_queue(workers.queue)] == (0, 0)  # acked, not handed back
    assert states[worker.topology.failed_queue(workers.queue)] in (None, (0, 0))
    assert runs == [job.id]
    text = "\n".join(r.getMessage() for r in ours(caplog))
    assert not any(lost in text for lost in LOST), text
    assert "event loop blocked" not in text  # the loop was free all along
    assert "could not ack" not in text


async def test_an_async_handler_blocking_the_loop_is_named_and_its_job_is_not_lost(
    workers: Workers,
    secret_user: SecretUser,
    leak_watch: LeakWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="amqp_worker")
    worker = workers(
        url=secret_user.url(),
        heartbeat_s=HEARTBEAT_S,
        loop_stall_warn_s=0.5,
        reconnect_interval_s=0.2,
    )
    leak_watch.see(worker, worker.settings)
    runs: list[str] = []
    done: list[str] = []
    confirmed = asyncio.Event()

    async def blocks_the_loop(args: dict[str, Any], job: Job) -> None:
        runs.append(job.id)
        if len(runs) == 1:
            # The delivery can overtake the publisher's confirm; a stall before the
            # confirm would make perform() publish again (at-least-once: a second copy).
            await confirmed.wait()
            time.sleep(BLOCK_S)  # noqa: ASYNC251 - on the event loop: heartbeats stop too
        done.append(job.id)

    async def after(args: dict[str, Any], job: Job) -> None:
        done.append(job.id)

    worker.register("blocks_the_loop", blocks_the_loop)
    worker.register("after", after)
    blocker = Job(handler="blocks_the_loop", queue=workers.queue)
    follower = Job(handler="after", queue=workers.queue)
    work = worker.topology.work_queue(workers.queue)
    async with worker:
        await worker.perform(blocker)
        confirmed.set()
        await eventually(lambda: blocker.id in done)
        await worker.perform(follower)
        await eventually(lambda: follower.id in done)  # published once reconnected, if need be
        # If RabbitMQ closed the connection during the stall, it took the job
        # back before the ack could reach it, so the job must run a second time.
        dropped = any(
            r.getMessage().startswith("connection to") and "lost" in r.getMessage()
            for r in ours(caplog)
        )
        expected = 2 if dropped else 1
        await eventually(lambda: done.count(blocker.id) >= expected and worker._pool.running == 0)
        leak_watch.see(worker)
    # stop() handed back anything unacked: a lost ack would show as a ready message here.
    states = await settled(worker, workers.queue)
    messages = [r.getMessage() for r in ours(caplog)]
    why = f"runs={runs} dropped={dropped} states={states} log={messages}"
    assert states[work] == (0, 0), why
    assert states[worker.topology.quarantine_queue(workers.queue)] in (None, (0, 0)), why
    assert states[worker.topology.failed_queue(workers.queue)] in (None, (0, 0)), why
    # At least once: as often as RabbitMQ handed it out, never lost.
    assert set(runs) == {blocker.id}, why
    assert len(runs) >= expected, why
    # A busy machine may stall the loop again while reconnecting: find the handler's.
    [stall, *_] = [
        r
        for r in ours(caplog)
        if r.getMessage().startswith("event loop blocked") and "'blocks_the_loop'" in r.getMessage()
    ]
    assert stall.levelno == logging.WARNING
    assert "'blocks_the_loop'" in stall.getMessage()
    assert blocker.id in stall.getMessage()
    assert stall.__dict__["handler"] == "blocks_the_loop"
    assert any(m.startswith("event loop ran again") and blocker.id in m for m in messages)
