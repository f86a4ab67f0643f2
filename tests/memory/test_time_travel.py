"""amqp_worker.testing: a worker whose clock the test moves, and its pytest fixture.

Nothing here sleeps or times anything: hours pass in advance() calls.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_worker import Job, PermanentError, RetryPolicy
from amqp_worker.testing import JobsFailed, TimeTravelWorker


class Ping(BaseModel):
    n: int


def close(got: timedelta, expected: timedelta) -> bool:
    """Equal but for the wall-clock microseconds that pass between two calls of a test."""
    return abs(got - expected) < timedelta(seconds=1)


async def test_a_job_retried_twice_with_backoff_then_succeeding(
    time_travel_worker: TimeTravelWorker,
) -> None:
    worker = time_travel_worker
    seen: list[datetime] = []

    @worker.handler("flaky", retry=RetryPolicy(max_retries=3, base_s=60, factor=2, jitter=0))
    async def flaky(args: Ping) -> None:
        seen.append(worker.now())
        if len(seen) < 3:
            raise ConnectionError("smtp is down")

    start = worker.now()
    await flaky.perform(Ping(n=1))
    failures = await worker.advance(timedelta(hours=1))
    assert len(seen) == 3
    # Backoff on the worker's clock: 60 s, then 120 s more.
    assert [round((t - start).total_seconds()) for t in seen] == [0, 60, 180]
    assert seen[2] - seen[1] == timedelta(seconds=120)  # exact: the clock stood at each time
    assert [(event.moment, event.attempt) for event in failures] == [
        ("on_failure", 0),
        ("on_failure", 1),
    ]
    assert all(isinstance(event.error, ConnectionError) for event in failures)
    assert await worker.drain() == []  # reported once


async def test_delayed_jobs_run_in_due_order_each_at_its_time(
    time_travel_worker: TimeTravelWorker,
) -> None:
    worker = time_travel_worker
    ran: list[tuple[int, datetime]] = []

    @worker.handler("later")
    async def later(args: Ping) -> None:
        ran.append((args.n, worker.now()))

    start = worker.now()
    for hours in (3, 1, 2):
        await later.perform_in(Ping(n=hours), timedelta(hours=hours))
    await later.perform_at(Ping(n=10), start + timedelta(days=10))
    await worker.advance(timedelta(minutes=90))
    assert [n for n, _ in ran] == [1]
    await worker.advance(timedelta(hours=2))
    assert [n for n, _ in ran] == [1, 2, 3]
    # Between advances the clock flows with the wall clock: microseconds here.
    for n, when in ran:
        assert close(when - start, timedelta(hours=n))
    assert close(worker.now() - start, timedelta(minutes=210))
    await worker.advance(timedelta(days=30))
    assert ran[-1][0] == 10
    assert close(ran[-1][1] - start, timedelta(days=10))


async def test_what_a_job_enqueues_is_placed_from_its_own_time(
    time_travel_worker: TimeTravelWorker,
) -> None:
    worker = time_travel_worker
    ran: list[tuple[str, datetime]] = []

    @worker.handler("chain")
    async def chain(args: dict[str, Any]) -> None:
        ran.append((args["step"], worker.now()))
        if args["step"] == "first":
            await worker.perform_in(Job(handler="chain", args={"step": "second"}), 600)

    start = worker.now()
    await worker.perform_in(Job(handler="chain", args={"step": "first"}), 300)
    await worker.advance(timedelta(minutes=20))
    assert [step for step, _ in ran] == ["first", "second"]
    assert close(ran[0][1] - start, timedelta(minutes=5))
    # Placed from the first job's due time, on a clock that stood still while it ran.
    assert ran[1][1] - ran[0][1] == timedelta(minutes=10)


async def test_schedule_ticks_fire_once_each_as_time_passes(
    time_travel_worker: TimeTravelWorker,
) -> None:
    worker = TimeTravelWorker()  # schedules are declared before start
    ticks: list[datetime | None] = []

    @worker.handler("report")
    async def report(args: dict[str, Any], job: Job) -> None:
        ticks.append(job.scheduled_at)

    worker.schedule("quarterly", Job(handler="report"), every=timedelta(minutes=15))
    async with worker:
        await worker.advance(timedelta(hours=1))
        assert len(ticks) == 4
        assert len(set(ticks)) == 4
        got = [t for t in ticks if t is not None]
        assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(got))
        await worker.advance(timedelta(minutes=30))
        assert len(ticks) == 6


async def test_drain_re_raises_the_error_of_a_job_that_failed_for_good(
    time_travel_worker: TimeTravelWorker,
) -> None:
    worker = time_travel_worker

    @worker.handler("doomed")
    async def doomed(args: Ping) -> None:
        raise PermanentError(f"no such user {args.n}")

    await doomed.perform(Ping(n=7))
    with pytest.raises(PermanentError, match="no such user 7"):
        await worker.drain()

    await doomed.perform(Ping(n=8))
    await doomed.perform(Ping(n=9))
    with pytest.raises(JobsFailed, match="2 job") as info:
        await worker.drain()
    assert {event.job.args["n"] for event in info.value.failures if event.job} == {8, 9}

    await doomed.perform(Ping(n=10))
    events = await worker.drain(raise_errors=False)
    assert [event.moment for event in events] == ["on_failure", "on_parked"]
    assert len(await worker.failed.list()) == 4


async def test_advance_needs_a_started_worker_and_moves_only_forward() -> None:
    worker = TimeTravelWorker()
    with pytest.raises(RuntimeError, match="started"):
        await worker.advance(1)
    async with worker:
        with pytest.raises(ValueError, match="forward"):
            await worker.advance(-1)
        before = worker.now()
        await worker.advance(3600)
        assert worker.now() - before >= timedelta(hours=1)
        job_id = await worker.perform(Job(handler="x")) if "x" in worker.handlers else None
        assert job_id is None


async def test_enqueue_times_are_on_the_worker_clock(time_travel_worker: TimeTravelWorker) -> None:
    worker = time_travel_worker
    seen: list[Job] = []

    @worker.handler("stamp")
    async def stamp(args: dict[str, Any], job: Job) -> None:
        seen.append(job)

    await worker.advance(timedelta(days=365))
    await worker.perform(Job(handler="stamp"))
    await worker.drain()
    assert seen[0].enqueued_at is not None
    assert abs(seen[0].enqueued_at - worker.now()) < timedelta(minutes=1)
    assert worker.now() - datetime.now(seen[0].enqueued_at.tzinfo) > timedelta(days=364)


async def test_stop_still_reports_the_delayed_jobs_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = TimeTravelWorker()

    @worker.handler("later")
    async def later(args: dict[str, Any]) -> None:
        pass

    async with worker:
        await worker.perform_in(Job(handler="later"), timedelta(hours=5))
        await worker.advance(timedelta(hours=1))
    assert "dropped 1 queued or delayed job" in caplog.text


# The README's five-line test, verbatim.
calls: list[int] = []


async def flaky(args: Ping) -> None:  # fails twice, then works
    calls.append(args.n)
    if len(calls) < 3:
        raise ConnectionError("smtp is down")


async def test_the_readme_example(time_travel_worker: TimeTravelWorker) -> None:
    job = time_travel_worker.handler("flaky")(flaky)
    await job.perform(Ping(n=1))
    failures = await time_travel_worker.advance(timedelta(hours=1))  # milliseconds
    assert len(calls) == 3
    assert [failure.attempt for failure in failures] == [0, 1]


async def test_delayed_jobs_dropped_by_stop_are_gone_after_a_restart() -> None:
    worker = TimeTravelWorker()
    ran: list[int] = []

    @worker.handler("later")
    async def later(args: Ping) -> None:
        ran.append(args.n)

    async with worker:
        await later.perform_in(Ping(n=1), timedelta(hours=1))
    async with worker:  # the first job was dropped by stop(), as on SimpleWorker
        await later.perform_in(Ping(n=2), timedelta(hours=1))
        await worker.advance(timedelta(hours=2))
    assert ran == [2]


async def test_a_cancelled_job_is_listed_not_raised_by_advance_and_drain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = TimeTravelWorker()
    ran: list[int] = []

    @worker.handler("later")
    async def later(args: Ping) -> None:
        ran.append(args.n)

    async with worker:
        cancelled = await later.perform_in(Ping(n=1), timedelta(hours=1))
        await worker.cancel(cancelled)
        events = await worker.advance(timedelta(hours=2))
        assert [(event.moment, event.job_id) for event in events] == [
            ("on_failure", cancelled),
            ("on_parked", cancelled),
        ]
        assert events[-1].reason == "cancelled"
        queued = await later.perform(Ping(n=2))
        await worker.cancel(queued)
        parked = [event for event in await worker.drain() if event.moment == "on_parked"]
        assert [event.job_id for event in parked] == [queued]
    assert ran == []
    # A cancel is logged as a WARNING without a traceback, not as an ERROR.
    cancels = [r for r in caplog.records if "JobCancelled" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in cancels] == [("WARNING", None)] * 2
