"""When jobs fail: retries, timeouts, parking and failed-job operations, on every worker."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from amqp_worker import (
    FailedJob,
    FailedJobNotFound,
    FailedJobsResult,
    FailureReason,
    Job,
    JobEvent,
    JobTimeout,
    PermanentError,
    Retry,
    RetryPolicy,
)
from tests.conftest import WorkerKit

GUARD_S = 30.0
FAST = RetryPolicy(max_retries=2, base_s=0.1, factor=2.0, jitter=0.0)


class Flaky:
    """Fails ``failures`` times, then succeeds; records when each attempt started."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or RuntimeError("flaky")
        self.starts: list[float] = []
        self.attempts: list[int] = []
        self.succeeded = asyncio.Event()

    async def __call__(self, args: dict[str, Any], job: Job) -> None:
        self.starts.append(time.monotonic())
        self.attempts.append(job.attempt)
        if len(self.starts) <= self.failures:
            raise self.error
        self.succeeded.set()


async def wait_parked(worker: Any, count: int = 1) -> list[FailedJob]:
    deadline = time.monotonic() + GUARD_S
    while len(found := await worker.failed.list()) < count:
        assert time.monotonic() < deadline, f"only {len(found)} of {count} jobs parked"
        await asyncio.sleep(0.05)
    return list(found)


async def test_fails_twice_then_succeeds_runs_three_times_with_growing_delays(
    kit: WorkerKit,
) -> None:
    worker = kit.make(retry=FAST)
    flaky = Flaky(failures=2)
    worker.register("flaky", flaky)
    async with worker:
        await worker.perform(kit.job("flaky"))
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
    assert flaky.attempts == [0, 1, 2]
    first_gap = flaky.starts[1] - flaky.starts[0]
    second_gap = flaky.starts[2] - flaky.starts[1]
    assert first_gap >= 0.1
    assert second_gap >= 0.2
    assert await worker.failed.list() == []


async def test_an_always_failing_job_is_parked_with_every_attempt(kit: WorkerKit) -> None:
    worker = kit.make(retry=FAST)
    flaky = Flaky(failures=10**6, error=ValueError("never works"))
    worker.register("doomed", flaky)
    async with worker:
        job = kit.job("doomed", {"order": 7})
        await worker.perform(job)
        [parked] = await wait_parked(worker)
    assert flaky.attempts == [0, 1, 2]  # max_retries + 1 runs
    assert parked.id == job.id
    assert parked.reason is FailureReason.HANDLER_ERROR
    assert parked.attempts == 3
    assert [r.attempt for r in parked.history] == [0, 1, 2]
    for record in parked.history:
        assert record.error_type == "builtins.ValueError"
        assert record.error_message == "never works"
        assert "never works" in record.traceback
    assert parked.job is not None
    assert parked.job.args == {"order": 7}
    assert parked.last_error == "ValueError: never works"


async def test_retry_with_a_delay_is_honoured(kit: WorkerKit) -> None:
    worker = kit.make(retry=FAST)
    flaky = Flaky(failures=1, error=Retry("rate limited", delay_s=0.6))
    worker.register("h", flaky)
    async with worker:
        await worker.perform(kit.job("h"))
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
    assert flaky.starts[1] - flaky.starts[0] >= 0.6


async def test_a_permanent_error_is_parked_at_once(kit: WorkerKit) -> None:
    worker = kit.make(retry=FAST)
    flaky = Flaky(failures=10**6, error=PermanentError("card declined"))
    worker.register("charge", flaky)
    async with worker:
        await worker.perform(kit.job("charge"))
        [parked] = await wait_parked(worker)
    assert flaky.attempts == [0]
    assert parked.attempts == 1
    assert "card declined" in parked.last_error


async def test_dont_retry_on_and_retry_on(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=3, base_s=0.05, dont_retry_on=(KeyError,)))
    keyerror = Flaky(failures=10**6, error=KeyError("missing"))
    worker.register("k", keyerror)
    only_os = Flaky(failures=10**6, error=ValueError("not an OSError"))
    worker.register("o", only_os, retry=RetryPolicy(max_retries=3, retry_on=(OSError,)))
    async with worker:
        await worker.perform(kit.job("k"))
        await worker.perform(kit.job("o"))
        await wait_parked(worker, 2)
    assert keyerror.attempts == [0]
    assert only_os.attempts == [0]


async def test_a_per_handler_policy_overrides_the_worker_default(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=0))
    flaky = Flaky(failures=1)
    worker.register("h", flaky, retry=FAST)
    async with worker:
        await worker.perform(kit.job("h"))
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
    assert flaky.attempts == [0, 1]


async def test_an_async_timeout_cancels_and_retries(kit: WorkerKit) -> None:
    worker = kit.make(retry=FAST)
    attempts: list[int] = []
    cancelled: list[int] = []
    done = asyncio.Event()

    async def slow_then_fast(args: dict[str, Any], job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 0:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(job.attempt)
                raise
        done.set()

    worker.register("h", slow_then_fast, timeout_s=0.2)
    async with worker:
        await worker.perform(kit.job("h"))
        await asyncio.wait_for(done.wait(), GUARD_S)
    assert attempts == [0, 1]
    assert cancelled == [0]


async def test_a_sync_timeout_keeps_its_slot_until_the_thread_returns(kit: WorkerKit) -> None:
    worker = kit.make(max_concurrency=1, retry=RetryPolicy(max_retries=0), timeout_s=0.2)
    release = threading.Event()
    order: list[str] = []
    second = asyncio.Event()

    def stuck(args: dict[str, Any]) -> None:
        order.append("stuck started")
        release.wait(GUARD_S)
        order.append("stuck returned")

    async def after(args: dict[str, Any]) -> None:
        order.append("after ran")
        second.set()

    worker.register("stuck", stuck)
    worker.register("after", after)
    async with worker:
        await worker.perform(kit.job("stuck"))
        await worker.perform(kit.job("after"))
        [parked] = await wait_parked(worker)
        assert parked.history[-1].error_type == f"{JobTimeout.__module__}.JobTimeout"
        await asyncio.sleep(0.2)
        assert "after ran" not in order  # the only slot is still taken by the thread
        release.set()
        await asyncio.wait_for(second.wait(), GUARD_S)
    assert order == ["stuck started", "stuck returned", "after ran"]


async def test_retry_failed_brings_a_job_back_and_it_succeeds(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=0))
    flaky = Flaky(failures=1)
    worker.register("h", flaky)
    async with worker:
        job = kit.job("h", {"x": 1})
        await worker.perform(job)
        [parked] = await wait_parked(worker)
        assert await worker.failed.retry([parked.id]) == FailedJobsResult(done=(job.id,))
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
        assert flaky.attempts == [0, 0]  # attempt reset
        assert await worker.failed.list() == []
        # Safe to run twice: nothing left, and it says so.
        assert await worker.failed.retry([parked.id]) == FailedJobsResult(not_found=(job.id,))


async def test_purge_failed(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=0))
    worker.register("h", Flaky(failures=10**6))
    async with worker:
        jobs = [kit.job("h", {"n": n}) for n in range(3)]
        for job in jobs:
            await worker.perform(job)
        await wait_parked(worker, 3)
        purged = await worker.failed.purge([jobs[0].id, "no-such-id"])
        assert purged == FailedJobsResult(done=(jobs[0].id,), not_found=("no-such-id",))
        assert {f.id for f in await worker.failed.list()} == {jobs[1].id, jobs[2].id}
        shown = await worker.failed.show(jobs[1].id)
        assert shown.job is not None
        assert (shown.id, shown.job.args) == (jobs[1].id, {"n": 1})
        with pytest.raises(FailedJobNotFound):
            await worker.failed.show("no-such-id")
        assert len(await worker.failed.list(limit=1)) == 1
        assert sorted((await worker.failed.purge()).done) == sorted([jobs[1].id, jobs[2].id])
        assert await worker.failed.list() == []
        with pytest.raises(TypeError):
            await worker.failed.purge(jobs[1].id)  # type: ignore[arg-type]  # a str, not ids


async def test_hooks_see_every_moment(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=1, base_s=0.05, jitter=0))
    events: list[tuple[str, str | None, int]] = []
    parked = asyncio.Event()

    @worker.hooks.before
    def before(event: JobEvent) -> None:
        events.append((event.moment, event.handler, event.attempt))

    @worker.hooks.after
    async def after(event: JobEvent) -> None:
        assert event.duration_s is not None
        events.append((event.moment, event.handler, event.attempt))

    @worker.hooks.on_failure
    def on_failure(event: JobEvent) -> None:
        assert event.error is not None
        events.append((event.moment, event.handler, event.attempt))

    @worker.hooks.on_parked
    def on_parked(event: JobEvent) -> None:
        assert event.reason is FailureReason.HANDLER_ERROR
        events.append((event.moment, event.handler, event.attempt))
        parked.set()

    @worker.hooks.after
    def broken(event: JobEvent) -> None:
        raise RuntimeError("a broken hook never fails a job")

    ok = asyncio.Event()
    worker.register("ok", lambda args: ok.set())
    worker.register("bad", Flaky(failures=10**6))
    async with worker:
        await worker.perform(kit.job("ok"))
        await asyncio.wait_for(ok.wait(), GUARD_S)
        await asyncio.sleep(0.1)
        await worker.perform(kit.job("bad"))
        await asyncio.wait_for(parked.wait(), GUARD_S)
    assert events == [
        ("before", "ok", 0),
        ("after", "ok", 0),
        ("before", "bad", 0),
        ("on_failure", "bad", 0),
        ("before", "bad", 1),
        ("on_failure", "bad", 1),
        ("on_parked", "bad", 1),
    ]


async def test_on_publish_headers_travel_with_the_job_and_its_retries(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=1, base_s=0.05, jitter=0))
    seen: list[tuple[int, Any]] = []
    done = asyncio.Event()

    @worker.hooks.on_publish
    def inject(job: Job, headers: dict[str, Any]) -> None:
        headers["trace-parent"] = f"trace-of-{job.args['n']}"

    @worker.hooks.before
    def extract(event: JobEvent) -> None:
        seen.append((event.attempt, event.headers.get("trace-parent")))

    worker.register("h", Flaky(failures=1))
    worker.hooks.after(lambda event: done.set())
    async with worker:
        await worker.perform_in(kit.job("h", {"n": 5}), 0.05)
        await asyncio.wait_for(done.wait(), GUARD_S)
    assert seen == [(0, "trace-of-5"), (1, "trace-of-5")]


async def test_on_publish_headers_survive_parking_and_retry_failed(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=0))
    seen: list[Any] = []
    flaky = Flaky(failures=1)

    @worker.hooks.on_publish
    def inject(job: Job, headers: dict[str, Any]) -> None:
        headers["trace-parent"] = "trace-of-the-request"

    worker.hooks.before(lambda event: seen.append(event.headers.get("trace-parent")))
    worker.register("h", flaky)
    async with worker:
        await worker.perform(kit.job("h"))
        [parked] = await wait_parked(worker)
        await worker.failed.retry([parked.id])
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
    assert seen == ["trace-of-the-request", "trace-of-the-request"]
