"""Results, chains and groups on the real broker: crashes, restarts, parked members.

The group tests leave nothing behind: a finished group's queue is deleted by
the worker that let its callback go (checked here), and the work queues go
with the ``workers`` fixture.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest

from amqp_worker import AMQPWorker, Job, PermanentError, chain, group
from amqp_worker._rabbitmq.groups import COLLECTOR_TAG
from amqp_worker.errors import GroupExists, JobFailed
from tests.amqp.conftest import Workers
from tests.harness.broker_node import BrokerNode, rabbitmq_available
from tests.harness.brokertools import BROKER_URL, delete_queues, queue_state
from tests.harness.processes import spawn_worker, stop_worker

pytestmark = pytest.mark.broker


# The session's results stream is deleted with the session's topology (tests/conftest.py),
# never here: other modules' workers of the same name read and write it after this one
# (deleting it mid-session, then re-creating it, left RabbitMQ 3.10's stream stuck once).


async def until(check: Callable[[], bool], what: str, limit_s: float = 300.0) -> None:
    """Wait for ``check()``; a generous limit only so a hung run fails instead of hanging."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.1)


def lines(runs: Path) -> list[str]:
    return runs.read_text().splitlines() if runs.exists() else []


def member_runs(runs: Path) -> list[tuple[int, int]]:
    return [
        (int(parts[1]), int(parts[2]))
        for parts in (line.split() for line in lines(runs))
        if parts[0] == "member"
    ]


def callback_runs(runs: Path) -> int:
    return sum(1 for line in lines(runs) if line.startswith("callback "))


def unsettled(names: list[str]) -> int:
    """Messages ready or unacked in queues ``names`` of the shared broker (rabbitmqctl)."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "messages"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    wanted = set(names)
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in wanted and parts[1].isdigit():
            total += int(parts[1])
    return total


async def spawn(workers: Workers, runs: Path, log: Path) -> asyncio.subprocess.Process:
    """A group worker process; its log (INFO and up) goes to ``log``."""
    name, queue = workers.topology.name, workers.queue
    return await spawn_worker("tests.amqp.group_worker", log, name, queue, str(runs))


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    await stop_worker(proc, sig)


@pytest.mark.timeout(900)
async def test_a_1000_member_group_survives_kill_9_of_one_of_its_two_workers(
    workers: Workers, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    size = 1000
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first, second = await spawn(workers, runs, logs[0]), await spawn(workers, runs, logs[1])
    try:
        publisher = workers()
        members = [Job(handler="member", queue=workers.queue, args={"i": i}) for i in range(size)]
        then = Job(handler="callback", queue=workers.queue)
        handle = await publisher.perform_group(group(members, then=then))
        group_queue = workers.topology.group_queue(handle.id)

        await until(lambda: len(member_runs(runs)) >= 300, "300 member runs")
        assert first.returncode is None
        assert second.returncode is None
        await stop(first)  # kill -9, some hundreds of members in
        done = len(member_runs(runs))
        assert done < size, "the group finished before the kill: nothing was tested"

        status = await handle.wait(timeout_s=600, poll_s=1.0)
        assert status.state == "finished", status
        assert (status.size, status.succeeded, status.parked) == (size, size, [])
        try:
            await until(lambda: callback_runs(runs) >= 1, "the callback ran")
        except AssertionError:
            names = [group_queue, *workers.topology.queues_of(workers.queue)]
            counts = {name: await queue_state(name) for name in names}
            raise AssertionError(
                f"the callback never ran; queues {counts}; logs in {tmp_path}"
            ) from None
        # Settle everything still in flight (the killed worker's jobs come back and run
        # again; their markers find the group closed), then stop the survivor cleanly.
        queues = list(workers.topology.queues_of(workers.queue))
        await until(lambda: unsettled(queues) == 0, "every queue drained", limit_s=600)
        await stop(second, signal.SIGTERM)
        assert second.returncode == 0
    finally:
        await stop(first)
        await stop(second)

    assert callback_runs(runs) == 1
    ran = member_runs(runs)
    assert {index for index, _ in ran} == set(range(size))
    # The members that failed on their first attempt ran again and succeeded.
    retried = {index for index, attempt in ran if attempt >= 1}
    assert set(range(0, size, 20)) <= retried
    # Nothing left on the broker for the group.
    assert await queue_state(group_queue) is None
    assert unsettled([group_queue, *queues]) == 0
    again = await workers().group_status(handle.id)
    assert again.state == "finished"
    assert again.succeeded == size
    # Every member's result was kept (those that died with the killed worker ran again).
    assert await handle.results(timeout_s=120) == list(range(size))


class Flaky:
    """Handlers ``m`` (parks member ``broken`` while ``broken`` is set) and ``cb`` (counts)."""

    def __init__(self, worker: AMQPWorker, broken: int | None) -> None:
        self.broken = broken
        self.callbacks = 0
        self.called = asyncio.Event()
        worker.register("m", self.member)
        worker.register("cb", self.callback)

    async def member(self, args: dict[str, int]) -> None:
        if args["i"] == self.broken:
            raise PermanentError(f"member {self.broken} is broken")

    async def callback(self, args: dict[str, Any]) -> None:
        self.callbacks += 1
        self.called.set()


async def drained(workers: Workers) -> None:
    """Until nothing is ready or unacked on the test's work, due and quarantine queues.

    A second callback would be there (parked members stay in the failed-jobs queue).
    """
    topology = workers.topology
    queues = [
        topology.work_queue(workers.queue),
        topology.due_queue(workers.queue),
        topology.quarantine_queue(workers.queue),
    ]
    await until(lambda: unsettled(queues) == 0, "the queues drained", limit_s=60)


@pytest.mark.timeout(120)
async def test_a_parked_member_fails_the_group_and_its_retry_lets_the_callback_go_once(
    workers: Workers,
) -> None:
    worker = workers()
    flaky = Flaky(worker, broken=2)
    members = [Job(handler="m", queue=workers.queue, args={"i": i}) for i in range(5)]
    async with worker:
        handle = await worker.perform_group(
            group(members, then=Job(handler="cb", queue=workers.queue))
        )
        status = await handle.wait(timeout_s=60)
        assert status.state == "failed"
        assert (status.size, status.succeeded, status.pending) == (5, 4, 0)
        assert [(p.index, p.job_id, p.reason) for p in status.parked] == [
            (2, members[2].id, "handler_error")
        ]
        assert flaky.callbacks == 0
        assert await queue_state(workers.topology.group_queue(handle.id)) is not None

        flaky.broken = None  # fixed: the retry succeeds
        retried = await worker.failed.retry([members[2].id])
        assert retried.done == (members[2].id,)
        await asyncio.wait_for(flaky.called.wait(), 60)
        status = await handle.wait(timeout_s=60)
        assert status.state == "finished"
        assert (status.succeeded, status.parked) == (5, [])
        await drained(workers)
    assert flaky.callbacks == 1
    assert await queue_state(workers.topology.group_queue(handle.id)) is None


@pytest.mark.timeout(120)
async def test_then_if_failed_runs_the_callback_once_after_a_parked_member(
    workers: Workers,
) -> None:
    worker = workers()
    flaky = Flaky(worker, broken=0)
    members = [Job(handler="m", queue=workers.queue, args={"i": i}) for i in range(4)]
    async with worker:
        handle = await worker.perform_group(
            group(members, then=Job(handler="cb", queue=workers.queue), then_if_failed=True)
        )
        await asyncio.wait_for(flaky.called.wait(), 60)
        status = await handle.wait(timeout_s=60)
        assert status.state == "finished"
        assert status.succeeded == 3
        assert [(p.index, p.job_id) for p in status.parked] == [(0, members[0].id)]
        await drained(workers)
    assert flaky.callbacks == 1
    assert await queue_state(workers.topology.group_queue(handle.id)) is None


@pytest.mark.timeout(60)
async def test_an_open_group_id_cannot_be_used_again(workers: Workers) -> None:
    publisher = workers()  # nothing consumes: the group stays open
    gid = f"g-{uuid.uuid4().hex[:10]}"
    try:
        members = [Job(handler="m", queue=workers.queue, args={"i": i}) for i in range(3)]
        handle = await publisher.perform_group(group(members, group_id=gid))
        assert handle.id == gid
        status = await publisher.group_status(gid)
        assert (status.state, status.size, status.succeeded) == ("open", 3, 0)
        again = [Job(handler="m", queue=workers.queue, args={"i": i}) for i in range(3)]
        with pytest.raises(GroupExists, match=gid):
            await publisher.perform_group(group(again, group_id=gid))
        # Nothing of the refused group was enqueued.
        assert await queue_state(workers.topology.work_queue(workers.queue)) == (3, 0)
    finally:
        await delete_queues([workers.topology.group_queue(gid)])


@pytest.mark.timeout(60)
async def test_a_result_that_is_not_json_parks_the_job_as_invalid_result(
    workers: Workers,
) -> None:
    worker = workers()

    async def raw(args: dict[str, Any]) -> bytes:
        return b"\x00\xff"

    worker.register("raw", raw, result=True)
    async with worker:
        handle = await worker.perform(Job(handler="raw", queue=workers.queue))
        with pytest.raises(JobFailed) as failed:
            await handle.result(timeout_s=30)
        record = failed.value.result
        assert (record.job_id, record.status, record.reason) == (
            handle.id,
            "failed",
            "invalid_result",
        )
        parked = await worker.failed.list(queue=workers.queue)
        assert [(job.id, job.reason) for job in parked] == [(handle.id, "invalid_result")]


@pytest.mark.timeout(60)
async def test_another_worker_finds_a_result_by_the_job_id_alone(workers: Workers) -> None:
    worker = workers()

    async def double(args: dict[str, int]) -> dict[str, int]:
        return {"twice": 2 * args["n"]}

    worker.register("double", double, result=True)
    async with worker:
        # This name's results stream is new: give it a second before the first result (a
        # RabbitMQ race, open in the library: a publish to a just-created stream can crash).
        await worker._results.ensure()  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        early = str(
            await workers().perform(Job(handler="double", queue=workers.queue, args={"n": 4}))
        )
        # Finished before anyone waits: a worker that knows only the id scans for it.
        assert await worker.handle(early).result(timeout_s=30) == {"twice": 8}
        other = workers(queues=[f"other.{uuid.uuid4().hex[:8]}"])
        assert await other.handle(early).result(timeout_s=30) == {"twice": 8}
        # Waited for before it runs: the other worker's listener hands it over.
        job = Job(handler="double", queue=workers.queue, args={"n": 21})
        waiting = asyncio.ensure_future(other.handle(job.id).result(timeout_s=30))
        await asyncio.sleep(0.5)
        await workers().perform(job)
        assert await waiting == {"twice": 42}


@pytest.mark.timeout(300)
async def test_a_chain_of_five_steps_runs_in_order_across_a_broker_restart() -> None:
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root to start a private node")
    queue = f"q.{uuid.uuid4().hex[:8]}"
    ran: list[int] = []
    second = asyncio.Event()

    async def step(args: dict[str, Any]) -> list[int]:
        ran.append(args["n"])
        if len(ran) == 2:
            second.set()
        await asyncio.sleep(1.0)  # the restart lands while a step runs
        return [*args["acc"], args["n"]]

    with BrokerNode() as node:
        worker = AMQPWorker(
            node.url,
            name="awtest-chain",
            queues=[queue],
            reconnect_interval_s=0.2,
            heartbeat_s=2,
            publish_timeout_s=60,
        )
        worker.register("step", step, result=True)
        flaky = Flaky(worker, broken=None)
        steps = [
            Job(handler="step", queue=queue, args={"n": n, "acc": []} if n == 0 else {"n": n})
            for n in range(5)
        ]
        async with worker:
            # A group that finished before the restart: its queue must stay deleted.
            done = await worker.perform_group(
                group(
                    [Job(handler="m", queue=queue, args={"i": 1})],
                    then=Job(handler="cb", queue=queue),
                )
            )
            assert (await done.wait(timeout_s=60)).state == "finished"
            group_queue = worker.settings.topology.group_queue(done.id)
            assert await queue_state(group_queue, url=node.url) is None

            handle = await worker.perform_chain(chain(*steps, result_into="acc"))
            await asyncio.wait_for(second.wait(), 60)
            await asyncio.to_thread(node.kill)  # SIGKILL mid-step
            await asyncio.to_thread(node.restart)
            assert await handle.result(timeout_s=120) == [0, 1, 2, 3, 4]
            assert await queue_state(group_queue, url=node.url) is None
        assert flaky.callbacks == 1
    # Each step first ran after the one before it. At-least-once: the step running at
    # the kill may run again, even after the next one started (it was enqueued before
    # the interrupted step's ack, which the kill lost); the result passed along is right.
    assert list(dict.fromkeys(ran)) == [0, 1, 2, 3, 4], ran


@pytest.mark.timeout(60)
async def test_a_status_read_whose_group_queue_vanishes_before_it_consumes(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another collector may finish the group and delete its queue between a status
    read's declare and its exclusive consume: the read must not fail (it did)."""
    publisher = workers()
    members = [Job(handler="m", queue=workers.queue, args={"i": 0})]
    handle = await publisher.perform_group(group(members))
    name = workers.topology.group_queue(handle.id)
    declared = aiormq.Channel.queue_declare
    passive: list[str] = []

    async def declare_then_vanish(self: aiormq.Channel, queue: str = "", **kwargs: Any) -> Any:
        ok = await declared(self, queue, **kwargs)
        if queue == name and kwargs.get("passive"):
            passive.append(queue)
            if len(passive) == 2:  # the second: the collector's own, just before it consumes
                await delete_queues([name])
        return ok

    monkeypatch.setattr(aiormq.Channel, "queue_declare", declare_then_vanish)
    status = await publisher.group_status(handle.id)
    assert len(passive) == 2
    # Gone without a record of finishing (deleted behind its back here): unknown.
    assert status.state == "unknown"


@pytest.mark.timeout(90)
async def test_a_group_is_not_let_go_while_its_callback_is_held_elsewhere(
    workers: Workers,
) -> None:
    """Every marker read, but the callback message unacked on another channel (as a
    collector's, between its cancel and its hand-back): the group must wait for it.
    It was let go, and its queue deleted with the callback in it."""
    worker = workers()
    flaky = Flaky(worker, broken=None)
    then = Job(handler="cb", queue=workers.queue)
    handle = await worker.perform_group(
        group([Job(handler="m", queue=workers.queue, args={"i": 0})], then=then)
    )
    name = workers.topology.group_queue(handle.id)
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        held = await queue.get(no_ack=False)
        assert held.message_id == then.id
        async with worker:
            deadline = time.monotonic() + 60
            while (await queue_state(name) or (0, 0))[0] < 1:  # the member's marker
                assert time.monotonic() < deadline, "the member never reported"
                await asyncio.sleep(0.05)
            status = await worker.group_status(handle.id)
            assert status.state == "open"
            assert await queue_state(name) is not None
            await held.nack(requeue=True)
            status = await handle.wait(timeout_s=60)
            assert status.state == "finished"
            await asyncio.wait_for(flaky.called.wait(), 60)
            await drained(workers)
    assert flaky.callbacks == 1
    assert await queue_state(name) is None


@pytest.mark.timeout(90)
async def test_the_last_marker_coming_while_a_status_read_holds_the_queue_is_not_missed(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last member reports while a status read holds the group queue: its count
    misses its own marker (held messages are not counted), so it leaves the group to
    the reader. The reader must look again after handing the queue back; it did not,
    and the group stayed open with its callback waiting."""
    worker = workers()
    flaky = Flaky(worker, broken=None)
    idle = f"idle.{uuid.uuid4().hex[:8]}"  # nobody consumes the member: this test reports it
    workers.extra_queues.append(workers.topology.work_queue(idle))
    made = group(
        [Job(handler="m", queue=idle, args={"i": 0})],
        then=Job(handler="cb", queue=workers.queue),
    )
    member = made.member_jobs()[0]
    cancel = aiormq.Channel.basic_cancel
    reported: list[str] = []

    async def cancel_after_the_member_reports(
        self: aiormq.Channel, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if consumer_tag.startswith(COLLECTOR_TAG) and not reported:
            reported.append(consumer_tag)
            await worker._groups.resolved(member, True, None)
        return await cancel(self, consumer_tag, **kwargs)

    async with worker:
        handle = await worker.perform_group(made)
        monkeypatch.setattr(aiormq.Channel, "basic_cancel", cancel_after_the_member_reports)
        await worker.group_status(handle.id)
        assert reported
        # That status read let the group go before it returned.
        assert await queue_state(workers.topology.group_queue(handle.id)) is None
        await asyncio.wait_for(flaky.called.wait(), 60)
        assert (await handle.status()).state == "finished"
        await drained(workers)
    assert flaky.callbacks == 1
