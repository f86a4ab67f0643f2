"""Delayed jobs on a real RabbitMQ: held by the broker, exact routing, never early."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from amqp_worker import Job
from amqp_worker._rabbitmq.topology import ONE_YEAR_MS
from tests.amqp.conftest import Workers
from tests.harness.brokertools import accepts_declaration, drain, queue_state

pytestmark = pytest.mark.broker

GUARD_S = 30.0


class Clock:
    """Records when each job started, against when it was due."""

    def __init__(self, expect: int) -> None:
        self.started: dict[str, float] = {}
        self.order: list[str] = []
        self.expect = expect
        self.done = asyncio.Event()

    async def __call__(self, args: dict[str, Any]) -> None:
        self.started[args["name"]] = time.time()
        self.order.append(args["name"])
        if len(self.order) >= self.expect:
            self.done.set()


async def test_mixed_delays_run_in_due_order_and_never_early(workers: Workers) -> None:
    # Delays beyond the window go through the broker's delay levels; a long one
    # published first must not hold back shorter ones published after it.
    worker = workers()
    delays = {"long": 4.0, "mid": 2.5, "short": 1.2, "tiny": 0.05, "now": 0.0}
    clock = Clock(expect=len(delays))
    worker.register("h", clock)
    due: dict[str, float] = {}
    async with worker:
        for name, delay in delays.items():
            due[name] = time.time() + delay
            await worker.perform_in(
                Job(handler="h", queue=workers.queue, args={"name": name}), delay
            )
        await asyncio.wait_for(clock.done.wait(), GUARD_S)
    assert clock.order == ["now", "tiny", "short", "mid", "long"]
    for name, started in clock.started.items():
        assert started >= due[name], f"{name} ran {due[name] - started:.3f}s early"


async def test_a_delay_through_several_levels_arrives_on_time(workers: Workers) -> None:
    worker = workers()
    clock = Clock(expect=1)
    worker.register("h", clock)
    async with worker:
        # 3.1 s with the default window: 4 units = "10" in base 4, via level 1.
        route = worker.topology.delay_route(3100)
        assert route.exchange == worker.topology.delay_exchange(1)
        due = time.time() + 3.1
        await worker.perform_in(Job(handler="h", queue=workers.queue, args={"name": "x"}), 3.1)
        await asyncio.wait_for(clock.done.wait(), GUARD_S)
    assert clock.started["x"] >= due


async def test_a_delayed_job_waits_in_the_broker_while_no_worker_runs(workers: Workers) -> None:
    publisher = workers()
    due = time.time() + 1.5
    job = Job(handler="h", queue=workers.queue, args={"name": "kept"})
    await publisher.perform_in(job, 1.5)
    await publisher.stop()
    await asyncio.sleep(2.5)  # the whole delay passes with no worker anywhere
    assert await queue_state(workers.topology.due_queue(workers.queue)) == (1, 0)
    worker = workers()
    clock = Clock(expect=1)
    worker.register("h", clock)
    async with worker:
        await asyncio.wait_for(clock.done.wait(), GUARD_S)
    assert clock.started["kept"] >= due


async def test_a_year_long_delay_is_routed_into_the_top_levels(workers: Workers) -> None:
    publisher = workers()
    topology = publisher.topology
    delay_ms = ONE_YEAR_MS - 1000
    route = topology.delay_route(delay_ms)
    top = len(route.headers) - 1
    digit = int(route.headers[f"aw-delay-{top}"])
    await publisher.perform_in(Job(handler="h", queue=workers.queue), delay_ms / 1000)
    await publisher.stop()
    queue = topology.delay_queue(top, digit)
    assert await queue_state(queue) == (1, 0)
    [message] = await drain(queue)  # take it out again: the delay queue is shared
    assert message["headers"]["aw-due-ms"] >= time.time() * 1000 + delay_ms - 60_000

    # The route is computed when the job is published, a moment after `route`:
    # the lowest digits may differ, the year-scale ones may not.
    def high(headers: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in headers.items() if k.startswith("aw-delay-") and int(k[9:]) >= 3}

    assert high(message["headers"]) == high(route.headers)
    assert len([k for k in message["headers"] if k.startswith("aw-delay-")]) == len(route.headers)


async def test_dotted_queue_names_route_exactly_through_the_delay_levels(
    workers: Workers,
) -> None:
    dotted = f"{workers.queue}.billing.eu"
    sibling = f"{workers.queue}.billing.us"
    worker = workers(queues=[dotted, sibling])
    got: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def h(args: dict[str, str], job: Job) -> None:
        got.append((args["to"], job.queue))
        if len(got) == 2:
            done.set()

    worker.register("h", h)
    async with worker:
        await worker.perform_in(Job(handler="h", queue=dotted, args={"to": dotted}), 1.5)
        await worker.perform_in(Job(handler="h", queue=sibling, args={"to": sibling}), 1.6)
        await asyncio.wait_for(done.wait(), GUARD_S)
    assert sorted(got) == sorted([(dotted, dotted), (sibling, sibling)])


async def test_perform_at_in_the_past_skips_the_delay_topology(workers: Workers) -> None:
    from datetime import UTC, datetime, timedelta

    publisher = workers()
    await publisher.perform_at(
        Job(handler="h", queue=workers.queue), datetime.now(UTC) - timedelta(1)
    )
    await publisher.stop()
    assert await queue_state(workers.topology.work_queue(workers.queue)) == (1, 0)


@pytest.mark.timeout(120)
async def test_quorum_queues_end_to_end() -> None:
    from amqp_worker import AMQPWorker
    from amqp_worker._rabbitmq.topology import Topology
    from tests.harness.brokertools import BROKER_URL, delete_topology

    name = f"awtest-quorum-{uuid.uuid4().hex[:6]}"
    queue = "jobs"
    worker = AMQPWorker(BROKER_URL, name=name, queues=[queue], queue_type="quorum")
    clock = Clock(expect=2)
    worker.register("h", clock)
    quorum, classic = Topology(name=name, queue_type="quorum"), Topology(name=name)
    try:
        async with worker:
            due = time.time() + 1.5
            await worker.perform(Job(handler="h", queue=queue, args={"name": "now"}))
            await worker.perform_in(Job(handler="h", queue=queue, args={"name": "later"}), 1.5)
            await asyncio.wait_for(clock.done.wait(), 60)
        assert clock.started["later"] >= due
        # RabbitMQ made them quorum queues: it takes their quorum arguments and
        # refuses the classic ones (a worker that ignored queue_type passes the above).
        route = quorum.delay_route(1500)
        level = len(route.headers) - 1
        delay = (level, int(route.headers[f"aw-delay-{level}"]))

        def declared(t: Topology) -> list[tuple[str, dict[str, Any]]]:
            return [
                (t.work_queue(queue), t.work_queue_arguments(queue)),
                (t.due_queue(queue), t.work_queue_arguments(queue)),
                (t.quarantine_queue(queue), t.work_queue_arguments(queue)),
                (t.failed_queue(queue), t.failed_queue_arguments()),
                (t.delay_queue(*delay), t.delay_queue_arguments(*delay)),
            ]

        for (made, want), (_, other) in zip(declared(quorum), declared(classic), strict=True):
            assert await accepts_declaration(made, want), made
            assert not await accepts_declaration(made, other), made
    finally:
        await worker.stop()
        await delete_topology(Topology(name=name, queue_type="quorum"), [queue])


async def test_a_full_hold_is_a_warning_and_every_job_still_runs_on_time(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    worker = workers(delay_prefetch=3)
    clock = Clock(expect=6)
    worker.register("h", clock)
    due: dict[str, float] = {}
    async with worker:
        for n in range(6):  # all due within the window: each one is held
            name = str(n)
            due[name] = time.time() + 0.8
            await worker.perform_in(Job(handler="h", queue=workers.queue, args={"name": name}), 0.8)
        await asyncio.wait_for(clock.done.wait(), GUARD_S)
    warnings = [r for r in caplog.records if "the delay_prefetch limit" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    for name, started in clock.started.items():
        assert started >= due[name], f"{name} ran early"
