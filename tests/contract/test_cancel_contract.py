"""Cancel (``worker.cancel``): the same contract on every worker (docs/controls.md#cancel).

A cancelled job never counts a success and is never dropped: it is parked with
reason ``cancelled``. Waits use generous guards against hangs; nothing asserts
on elapsed time.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from amqp_worker import FailureReason, Job, JobFailed
from tests.conftest import WorkerKit

# One copy of the contract suites' waits and recording handler.
from tests.contract.test_controls_contract import GUARD_S, parked, recording, until


async def test_a_queued_job_cancelled_never_runs_and_is_parked_as_cancelled(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    ran = recording(worker)
    heard: list[str] = []
    worker.hooks.on_parked(lambda event: heard.append(str(event.reason)))
    doomed, kept = kit.job("work"), kit.job("work")
    await worker.perform(doomed)  # not started: both wait in the queue
    await worker.perform(kept)
    assert await worker.cancel(doomed.id) is None
    async with worker:
        failed = await parked(worker, doomed.id)
        await until(lambda: kept.id in ran)
    assert failed.reason == FailureReason.CANCELLED
    assert "cancelled before it started" in failed.error_message
    assert doomed.id not in ran
    assert heard == ["cancelled"]


async def test_a_delayed_job_cancelled_never_runs(kit: WorkerKit) -> None:
    worker = kit.make()
    ran = recording(worker)
    doomed, kept = kit.job("work"), kit.job("work")
    async with worker:
        await worker.perform_in(doomed, 1.0)
        await worker.perform_in(kept, 1.0)
        await worker.cancel(doomed.id)
        if kit.kind == "time_travel":
            await worker.advance(2.0, raise_errors=False)  # type: ignore[attr-defined]
        failed = await parked(worker, doomed.id)
        await until(lambda: kept.id in ran)
    assert failed.reason == FailureReason.CANCELLED
    assert ran == [kept.id]


async def test_a_running_async_handler_is_interrupted_and_its_job_parked(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    started = asyncio.Event()
    interrupted: list[bool] = []
    failures: list[str] = []
    worker.hooks.on_failure(lambda event: failures.append(type(event.error).__name__))

    async def stuck(args: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.append(True)
            raise

    worker.register("stuck", stuck)
    job = kit.job("stuck")
    async with worker:
        await worker.perform(job)
        await asyncio.wait_for(started.wait(), GUARD_S)
        await worker.cancel(job.id)
        failed = await parked(worker, job.id)
        # The worker goes on taking jobs after the interruption.
        ran = recording(worker)
        after = kit.job("work")
        await worker.perform(after)
        await until(lambda: after.id in ran)
    assert interrupted == [True]
    assert failed.reason == FailureReason.CANCELLED
    assert failed.attempts == 1  # never retried
    assert "interrupted" in failed.error_message
    assert failures == ["JobCancelled"]  # told once, as a failure, not as a hand-back


async def test_a_sync_handler_sees_the_cooperative_signal(kit: WorkerKit) -> None:
    worker = kit.make()
    started = threading.Event()
    saw: list[bool] = []

    def slow(args: dict[str, Any], cancelled: threading.Event) -> str:
        started.set()
        saw.append(cancelled.wait(GUARD_S))  # a long loop would check cancelled.is_set()
        return "stopped early"

    worker.register("slow", slow, result=True)
    job = kit.job("slow")
    async with worker:
        handle = await worker.perform(job)
        await asyncio.to_thread(started.wait, GUARD_S)
        await worker.cancel(job.id)
        failed = await parked(worker, job.id)
        # It returned a value, but after the cancel: it counts as cancelled, not a success.
        with pytest.raises(JobFailed, match="cancelled"):
            await handle.result(timeout_s=GUARD_S)
    assert saw == [True]
    assert failed.reason == FailureReason.CANCELLED
    assert "finished after the cancel" in failed.error_message


async def test_a_sync_handler_not_cancelled_sees_the_signal_clear(kit: WorkerKit) -> None:
    worker = kit.make()
    seen: list[bool] = []

    def quick(args: dict[str, Any], cancelled: threading.Event, job: Job) -> None:
        seen.append(cancelled.is_set())

    worker.register("quick", quick)
    async with worker:
        await worker.perform(kit.job("quick"))
        await until(lambda: seen)
    assert seen == [False]


async def test_a_cancelled_job_with_result_true_leaves_a_failure(kit: WorkerKit) -> None:
    worker = kit.make()
    recording(worker, result=True)
    job = kit.job("work")
    handle = await worker.perform(job)
    await worker.cancel(job.id)
    async with worker:
        with pytest.raises(JobFailed, match="cancelled") as failure:
            await handle.result(timeout_s=GUARD_S)
    assert failure.value.result.reason == "cancelled"


async def test_cancelling_an_unknown_id_twice_or_a_finished_job_is_harmless(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    ran = recording(worker, result=True)
    job = kit.job("work")
    async with worker:
        # Unknown ids, twice, several at once: nothing to do, no error.
        unknown = f"no-such-job-{uuid.uuid4().hex[:8]}"
        await worker.cancel(unknown)
        await worker.cancel(unknown, f"another-{uuid.uuid4().hex[:8]}")
        handle = await worker.perform(job)
        assert await handle.result(timeout_s=GUARD_S) == "done"
        await worker.cancel(job.id)  # finished: it stays finished
        assert await worker.handle(job.id).result(timeout_s=GUARD_S) == "done"
        # A job enqueued later with a cancelled id (within cancel_ttl_s) is cancelled too.
        reused = kit.job("work", id=unknown)
        await worker.perform(reused)
        failed = await parked(worker, unknown)
    assert failed.reason == FailureReason.CANCELLED
    assert ran == [job.id]
    assert [j.id for j in await worker.failed.list()] == [unknown]


@pytest.mark.parametrize(
    ("bad", "error"), [("", ValueError), (7, TypeError), ("x" * 300, ValueError)]
)
async def test_cancel_checks_its_ids(kit: WorkerKit, bad: Any, error: type[Exception]) -> None:
    worker = kit.make()
    with pytest.raises(error):
        await worker.cancel(bad)


async def test_a_cancel_during_the_before_hooks_stops_the_handler_from_starting(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    ran = recording(worker)

    async def cancel_it(event: Any) -> None:
        await worker.cancel(event.job_id)  # e.g. a hook that checks a kill list

    worker.hooks.before(cancel_it)
    job = kit.job("work")
    async with worker:
        await worker.perform(job)
        failed = await parked(worker, job.id)
    assert failed.reason == FailureReason.CANCELLED
    assert "before it started" in failed.error_message
    assert ran == []
