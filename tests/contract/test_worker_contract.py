"""The Worker contract, written once and run against every implementation.

Each test checks one rule from ``amqp_worker._core.interfaces.Worker``. Waits use
generous ``wait_for`` guards against hangs; nothing asserts on elapsed time
except "never before the due time", which is a correctness rule.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_worker import (
    ConfigurationError,
    HandlerAlreadyRegistered,
    InvalidHandler,
    InvalidSchedule,
    Job,
    JobEvent,
    JobRef,
    JobTooLarge,
    RetryPolicy,
    TypedHandler,
    Worker,
)
from amqp_worker._core.schedule import tick_id
from tests.conftest import WorkerKit

GUARD_S = 20.0


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), GUARD_S)


class Recorder:
    """An async handler that records each call and signals after ``expect`` of them."""

    def __init__(self, expect: int = 1) -> None:
        self.calls: list[tuple[dict[str, Any], float]] = []
        self.expect = expect
        self.done = asyncio.Event()

    async def __call__(self, args: dict[str, Any]) -> None:
        self.calls.append((args, time.time()))
        if len(self.calls) >= self.expect:
            self.done.set()


# -- the protocol -------------------------------------------------------------


def test_is_a_worker(kit: WorkerKit) -> None:
    assert isinstance(kit.make(), Worker)


# -- register -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a\nb", "x" * 256, "é" * 128])
def test_register_rejects_bad_names(kit: WorkerKit, name: str) -> None:
    with pytest.raises(InvalidHandler):
        kit.make().register(name, Recorder())


@pytest.mark.parametrize("handler", [None, 42, "not callable"])
def test_register_rejects_non_callables(kit: WorkerKit, handler: Any) -> None:
    with pytest.raises(InvalidHandler, match="callable"):
        kit.make().register("h", handler)


def test_register_rejects_a_handler_without_an_args_parameter(kit: WorkerKit) -> None:
    def no_args() -> None: ...

    with pytest.raises(InvalidHandler, match="first parameter"):
        kit.make().register("h", no_args)


def test_register_rejects_duplicates(kit: WorkerKit) -> None:
    worker = kit.make()
    worker.register("h", Recorder())
    with pytest.raises(HandlerAlreadyRegistered, match="'h'"):
        worker.register("h", Recorder())


def test_handler_decorator_registers_and_returns_the_function(kit: WorkerKit) -> None:
    worker = kit.make()

    async def h(args: dict[str, Any]) -> None: ...

    assert worker.handler("h")(h) is h
    with pytest.raises(HandlerAlreadyRegistered):
        worker.register("h", h)


async def test_register_after_start(kit: WorkerKit) -> None:
    worker = kit.make()
    async with worker:
        rec = Recorder()
        worker.register("late", rec)
        await worker.perform(kit.job("late", {"n": 1}))
        await wait(rec.done)
    assert rec.calls[0][0] == {"n": 1}


async def test_running_is_true_between_start_and_stop(kit: WorkerKit) -> None:
    worker = kit.make()
    assert isinstance(worker, Worker)
    assert not worker.running
    async with worker:
        assert worker.running
    assert not worker.running


async def test_with_options_makes_a_stopped_copy_that_runs_the_same_handlers(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    assert isinstance(worker, Worker)
    rec = Recorder()
    worker.register("h", rec)
    seen: list[str] = []
    worker.hooks.before(lambda event: seen.append(event.job_id))
    copy = worker.with_options(max_concurrency=3)
    kit.workers.append(copy)
    assert copy is not worker
    assert copy.max_concurrency == 3
    assert copy.handlers == ("h",)
    after_on_copy: list[str] = []
    copy.hooks.after(lambda event: after_on_copy.append(event.job_id))
    assert copy.hooks is not worker.hooks
    assert (copy.retry, copy.timeout_s) == (worker.retry, worker.timeout_s)
    copy.register("only_on_the_copy", rec)
    assert worker.handlers == ("h",)
    async with copy:
        job_id = await copy.perform(kit.job("h", {"n": 1}))
        await wait(rec.done)
    assert rec.calls[0][0] == {"n": 1}
    assert seen == [job_id]  # the hook registered before the copy came along
    assert after_on_copy == [job_id]
    # Hooks are copied, not shared: one added to the copy never runs for the original.
    await worker.hooks.emit(JobEvent("after", kit.queue, None, "on-the-original"))
    assert after_on_copy == [job_id]


def test_with_options_refuses_unknown_options_and_bad_values(kit: WorkerKit) -> None:
    worker = kit.make()
    assert isinstance(worker, Worker)
    with pytest.raises(ConfigurationError, match="no_such_option"):
        worker.with_options(no_such_option=1)
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        worker.with_options(max_concurrency=0)


# -- perform --------------------------------------------------------------------


async def test_perform_runs_the_handler_with_the_args_and_returns_the_id(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        job = kit.job("h", {"user_id": 123, "tags": ["a"], "nested": {"ok": True}})
        assert await worker.perform(job) == job.id
        await wait(rec.done)
    assert rec.calls[0][0] == {"user_id": 123, "tags": ["a"], "nested": {"ok": True}}


async def test_perform_never_runs_the_handler_inline(kit: WorkerKit) -> None:
    worker = kit.make()
    ran_in: list[asyncio.Task[Any] | None] = []
    done = asyncio.Event()

    async def h(args: dict[str, Any]) -> None:
        ran_in.append(asyncio.current_task())
        done.set()

    worker.register("h", h)
    async with worker:
        await worker.perform(kit.job("h"))
        await wait(done)
    assert ran_in[0] is not asyncio.current_task()


async def test_jobs_performed_before_start_run_after_start(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder(expect=2)
    worker.register("h", rec)
    await worker.perform(kit.job("h", {"n": 1}))
    await worker.perform(kit.job("h", {"n": 2}))
    await asyncio.sleep(0.05)
    assert rec.calls == []
    async with worker:
        await wait(rec.done)
    assert sorted(c[0]["n"] for c in rec.calls) == [1, 2]


async def test_the_caller_never_sees_a_handler_exception_and_it_is_logged_once(
    kit: WorkerKit, caplog: pytest.LogCaptureFixture
) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=0))
    after = Recorder()

    async def boom(args: dict[str, Any]) -> None:
        raise RuntimeError("kaboom")

    worker.register("boom", boom)
    worker.register("after", after)
    async with worker:
        job = kit.job("boom")
        await worker.perform(job)  # must not raise
        await worker.perform(kit.job("after"))
        await wait(after.done)  # the worker keeps running
        await asyncio.sleep(0.1)
    records = [r for r in caplog.records if r.exc_info and "kaboom" in str(r.exc_info[1])]
    assert len(records) == 1
    message = records[0].getMessage()
    for part in (job.id, "boom", kit.queue, "attempt=0"):
        assert part in message
    assert records[0].levelno == logging.ERROR
    assert "RuntimeError: kaboom" in caplog.text  # the traceback is in the log


async def test_sync_handlers_run_in_a_thread_not_on_the_loop(kit: WorkerKit) -> None:
    worker = kit.make()
    threads: list[int] = []
    done = threading.Event()

    def h(args: dict[str, Any]) -> None:
        threads.append(threading.get_ident())
        done.set()

    worker.register("h", h)
    async with worker:
        await worker.perform(kit.job("h"))
        await asyncio.to_thread(done.wait, GUARD_S)
    assert threads
    assert threads[0] != threading.get_ident()


async def test_the_job_keyword_receives_the_envelope(kit: WorkerKit) -> None:
    worker = kit.make()
    seen: list[Job] = []
    done = asyncio.Event()

    async def h(args: dict[str, Any], job: Job) -> None:
        seen.append(job)
        done.set()

    worker.register("h", h)
    async with worker:
        job = kit.job("h", {"a": 1})
        await worker.perform(job)
        await wait(done)
    assert seen[0].id == job.id
    assert seen[0].attempt == 0
    assert seen[0].handler == "h"
    assert seen[0].args == {"a": 1}


class Email(BaseModel):
    to: str
    retries: int = 0


async def test_typed_args_are_validated_into_the_model(kit: WorkerKit) -> None:
    worker = kit.make()
    got: list[Email] = []
    done = asyncio.Event()

    async def send(args: Email) -> None:
        got.append(args)
        done.set()

    worker.register("send", send)
    async with worker:
        await worker.perform(kit.job("send", {"to": "a@example.com"}))
        await wait(done)
    assert got == [Email(to="a@example.com")]


class Invoice(BaseModel):
    """Fields whose JSON form differs from their Python form."""

    number: uuid.UUID
    total: Decimal
    due: datetime
    tags: frozenset[str] = frozenset()


async def test_a_typed_handler_performs_its_model_and_receives_exactly_it(kit: WorkerKit) -> None:
    worker = kit.make()
    got: list[Invoice] = []
    done = asyncio.Event()

    @worker.handler("bill", queue=kit.queue)
    async def bill(args: Invoice) -> None:
        got.append(args)
        if len(got) == 3:
            done.set()

    assert isinstance(bill, TypedHandler)
    assert bill.__name__ == "bill"
    sent = Invoice(
        number=uuid.uuid4(),
        total=Decimal("12.30"),
        due=datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        tags=frozenset({"a", "b"}),
    )
    async with worker:
        await bill.perform(sent)
        await bill.perform_in(sent, 0.05)
        await JobRef("bill", Invoice, queue=kit.queue).perform(sent, worker=worker)
        await wait(done)
    # Serialised in the model's JSON mode, validated back into the model: equal.
    assert got == [sent, sent, sent]
    await bill(sent)  # still callable like the function
    assert got[-1] is sent


def test_a_handler_without_a_model_comes_back_unchanged(kit: WorkerKit) -> None:
    worker = kit.make()

    async def plain(args: dict[str, Any]) -> None: ...

    assert worker.handler("plain")(plain) is plain


def test_a_typed_reference_refuses_other_args_at_run_time_too(kit: WorkerKit) -> None:
    ref = JobRef("send", Email, queue=kit.queue)
    with pytest.raises(TypeError, match="takes Email args, not dict"):
        ref.job({"to": "a@example.com"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pydantic model"):
        JobRef("send", dict)  # type: ignore[type-var]
    job = ref.job(Email(to="a@example.com"), queue="other")
    assert (job.handler, job.queue, job.args) == (
        "send",
        "other",
        {"to": "a@example.com", "retries": 0},
    )


async def test_invalid_typed_args_fail_the_job_not_the_worker(
    kit: WorkerKit, caplog: pytest.LogCaptureFixture
) -> None:
    worker = kit.make()
    called: list[Email] = []
    after = Recorder()

    def send(args: Email) -> None:
        called.append(args)

    worker.register("send", send)
    worker.register("after", after)
    async with worker:
        bad = kit.job("send", {"to": ["not", "a", "string"]})
        await worker.perform(bad)
        await worker.perform(kit.job("after"))
        await wait(after.done)
        await asyncio.sleep(0.1)
    assert called == []
    assert bad.id in caplog.text
    assert "Email" in caplog.text


# -- perform_at / perform_in ----------------------------------------------------


async def test_perform_in_runs_after_the_delay_never_before(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        start = time.time()
        await worker.perform_in(kit.job("h"), 0.3)
        await wait(rec.done)
    assert rec.calls[0][1] >= start + 0.3


async def test_perform_in_accepts_a_timedelta(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        start = time.time()
        await worker.perform_in(kit.job("h"), timedelta(milliseconds=200))
        await wait(rec.done)
    assert rec.calls[0][1] >= start + 0.2


async def test_perform_at_runs_at_the_time_never_before(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        when = datetime.now(UTC) + timedelta(milliseconds=300)
        await worker.perform_at(kit.job("h"), when)
        await wait(rec.done)
    assert rec.calls[0][1] >= when.timestamp()


async def test_perform_at_in_the_past_runs_as_soon_as_possible(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        await worker.perform_at(kit.job("h"), datetime.now(UTC) - timedelta(days=3))
        await wait(rec.done)


async def test_shorter_delays_are_not_held_behind_longer_ones(kit: WorkerKit) -> None:
    worker = kit.make()
    order: list[str] = []
    done = asyncio.Event()

    async def h(args: dict[str, Any]) -> None:
        order.append(args["name"])
        if len(order) == 2:
            done.set()

    worker.register("h", h)
    async with worker:
        await worker.perform_in(kit.job("h", {"name": "slow"}), 0.6)
        await worker.perform_in(kit.job("h", {"name": "fast"}), 0.1)
        await wait(done)
    assert order == ["fast", "slow"]


async def test_perform_at_rejects_naive_datetimes(kit: WorkerKit) -> None:
    worker = kit.make()
    worker.register("h", Recorder())
    with pytest.raises(ValueError, match="timezone-aware"):
        await worker.perform_at(kit.job("h"), datetime.now())


@pytest.mark.parametrize("delay", [-1, -0.001, timedelta(seconds=-5), float("nan"), float("inf")])
async def test_perform_in_rejects_negative_and_non_finite_delays(
    kit: WorkerKit, delay: Any
) -> None:
    worker = kit.make()
    worker.register("h", Recorder())
    with pytest.raises(ValueError, match="delay"):
        await worker.perform_in(kit.job("h"), delay)


@pytest.mark.parametrize("delay", ["5s", None, True, [1]])
async def test_perform_in_rejects_delays_of_the_wrong_type(kit: WorkerKit, delay: Any) -> None:
    worker = kit.make()
    worker.register("h", Recorder())
    with pytest.raises(TypeError, match="delay"):
        await worker.perform_in(kit.job("h"), delay)


async def test_perform_rejects_things_that_are_not_jobs(kit: WorkerKit) -> None:
    worker = kit.make()
    with pytest.raises(TypeError, match="Job"):
        await worker.perform({"handler": "h"})  # type: ignore[arg-type]


async def test_the_job_passed_in_is_not_mutated(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder(expect=3)
    worker.register("h", rec)
    job = kit.job("h", {"list": [1, 2]}, enqueued_at=datetime(2020, 1, 1, tzinfo=UTC))
    before = job.model_dump()
    async with worker:
        await worker.perform(job)
        await worker.perform_in(job, 0.01)
        await worker.perform_at(job, datetime.now(UTC))
        await wait(rec.done)
    assert job.model_dump() == before


# -- concurrency ------------------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_max_concurrency_bounds_running_handlers(kit: WorkerKit, sync: bool) -> None:
    worker = kit.make(max_concurrency=3)
    lock = threading.Lock()
    running = 0
    peak = 0
    finished = 0
    gate = threading.Event()
    full = threading.Event()
    all_done = threading.Event()

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 3:
                full.set()

    def leave() -> None:
        nonlocal running, finished
        with lock:
            running -= 1
            finished += 1
            if finished == 9:
                all_done.set()

    def sync_h(args: dict[str, Any]) -> None:
        enter()
        gate.wait(GUARD_S)
        leave()

    async def async_h(args: dict[str, Any]) -> None:
        enter()
        await asyncio.to_thread(gate.wait, GUARD_S)
        leave()

    worker.register("h", sync_h if sync else async_h)
    async with worker:
        for n in range(9):
            await worker.perform(kit.job("h", {"n": n}))
        await asyncio.to_thread(full.wait, GUARD_S)
        await asyncio.sleep(0.2)  # give an over-eager worker the chance to exceed the bound
        assert peak == 3
        gate.set()
        await asyncio.to_thread(all_done.wait, GUARD_S)
    assert peak == 3
    assert finished == 9


# -- stop ---------------------------------------------------------------------------


async def test_stop_waits_for_running_handlers(kit: WorkerKit) -> None:
    worker = kit.make()
    started = asyncio.Event()
    finished: list[bool] = []

    async def h(args: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(True)

    worker.register("h", h)
    await worker.start()
    await worker.perform(kit.job("h"))
    await wait(started)
    await worker.stop(timeout_s=GUARD_S)
    assert finished == [True]


async def test_stop_cancels_handlers_after_the_timeout_and_logs_it(
    kit: WorkerKit, caplog: pytest.LogCaptureFixture
) -> None:
    worker = kit.make()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def h(args: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    worker.register("h", h)
    await worker.start()
    await worker.perform(kit.job("h"))
    await wait(started)
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        await worker.stop(timeout_s=0.1)
    assert cancelled.is_set()
    assert "cancelled 1 handler" in caplog.text


async def test_stop_is_idempotent_and_safe_before_start(
    kit: WorkerKit, caplog: pytest.LogCaptureFixture
) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    caplog.set_level(logging.DEBUG, logger="amqp_worker")
    await worker.stop()  # before start: nothing to stop, and nothing broken by it
    assert not worker.running
    async with worker:
        await worker.perform(kit.job("h", {"round": 1}))
        await wait(rec.done)
    if kit.kind == "amqp":
        assert await kit.consumers() == (0, 0)  # leaving the block stopped consuming
    caplog.clear()
    await worker.stop()  # a stopped worker: "does nothing"
    await worker.stop()
    assert not worker.running
    assert [r.getMessage() for r in caplog.records] == []
    # Still a worker that starts and runs jobs, once each.
    rec.done.clear()
    async with worker:
        await worker.perform(kit.job("h", {"round": 2}))
        await wait(rec.done)
    assert [c[0]["round"] for c in rec.calls] == [1, 2]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_start_is_idempotent(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder(expect=3)
    worker.register("h", rec)
    await worker.perform(kit.job("h", {"n": 0}))  # waits for start: must run once, not per start
    await worker.start()
    await worker.start()
    assert worker.running
    if kit.kind == "amqp":
        assert await kit.consumers() == (1, 1)  # one consumer per queue, not one per start()
    await worker.perform(kit.job("h", {"n": 1}))
    await worker.perform_in(kit.job("h", {"n": 2}), 0.05)
    await wait(rec.done)
    await worker.stop(timeout_s=GUARD_S)  # lets any duplicate that started finish
    assert sorted(c[0]["n"] for c in rec.calls) == [0, 1, 2]


async def test_concurrent_starts_begin_once(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    await asyncio.gather(worker.start(), worker.start(), worker.start())
    assert worker.running
    if kit.kind == "amqp":
        assert await kit.consumers() == (1, 1)  # not one consumer per concurrent start()
    await worker.perform(kit.job("h"))
    await wait(rec.done)
    await worker.stop(timeout_s=GUARD_S)
    assert len(rec.calls) == 1


async def test_start_works_again_after_stop(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        await worker.perform(kit.job("h", {"round": 1}))
        await wait(rec.done)
    rec.done.clear()
    async with worker:
        await worker.perform(kit.job("h", {"round": 2}))
        await wait(rec.done)
    assert [c[0]["round"] for c in rec.calls] == [1, 2]


async def test_a_handler_may_enqueue_while_the_worker_stops(kit: WorkerKit) -> None:
    worker = kit.make()
    started = asyncio.Event()
    release = asyncio.Event()
    enqueued: list[str] = []

    async def h(args: dict[str, Any]) -> None:
        started.set()
        await release.wait()
        enqueued.append(await worker.perform(kit.job("other")))

    worker.register("h", h)
    worker.register("other", Recorder())
    await worker.start()
    await worker.perform(kit.job("h"))
    await wait(started)
    stopping = asyncio.create_task(worker.stop(timeout_s=GUARD_S))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(stopping, GUARD_S)
    assert len(enqueued) == 1


async def test_async_with_starts_and_stops(kit: WorkerKit) -> None:
    worker = kit.make()
    rec = Recorder()
    worker.register("h", rec)
    async with worker as same:
        assert same is worker
        await worker.perform(kit.job("h"))
        await wait(rec.done)
    assert not worker.running
    if kit.kind == "amqp":
        assert await kit.consumers() == (0, 0)


async def test_a_job_over_max_message_bytes_is_refused_before_it_is_enqueued(
    kit: WorkerKit,
) -> None:
    worker = kit.make(max_message_bytes=300)
    rec = Recorder()
    worker.register("h", rec)
    async with worker:
        with pytest.raises(JobTooLarge, match="max_message_bytes=300"):
            await worker.perform(kit.job("h", {"blob": "x" * 400}))
        with pytest.raises(JobTooLarge):
            await worker.perform_in(kit.job("h", {"blob": "x" * 400}), 0.01)
        with pytest.raises(JobTooLarge):  # all or nothing: the small one is not sent either
            await worker.perform_many([kit.job("h", {"n": 1}), kit.job("h", {"blob": "x" * 400})])
        await worker.perform(kit.job("h", {"n": 2}))
        await wait(rec.done)
    assert [call[0] for call in rec.calls] == [{"n": 2}]


# -- periodic jobs ------------------------------------------------------------------------


async def test_a_schedule_enqueues_each_tick_with_its_id_and_scheduled_time(
    kit: WorkerKit,
) -> None:
    worker = kit.make()
    ran: list[Job] = []
    two = asyncio.Event()

    async def tick(args: dict[str, Any], job: Job) -> None:
        ran.append(job)
        if len(ran) == 2:
            two.set()

    worker.register("tick", tick)
    name = f"hb-{kit.queue}"
    spec = worker.schedule(name, kit.job("tick", {"k": 1}), every=1)
    assert worker.schedules[name] is spec
    async with worker:
        await wait(two)
    first, second = ran[0], ran[1]
    for job in (first, second):
        assert job.scheduled_at is not None
        assert job.scheduled_at.microsecond == 0  # every=1 ticks on whole seconds
        assert job.id == tick_id(name, job.scheduled_at)
        assert job.args == {"k": 1}
        assert job.enqueued_at >= job.scheduled_at  # never early
    assert second.scheduled_at - first.scheduled_at == timedelta(seconds=1)  # type: ignore[operator]
    assert len({job.id for job in ran}) == len(ran)


async def test_bad_schedules_fail_at_once(kit: WorkerKit) -> None:
    worker = kit.make()
    job = kit.job("tick")
    with pytest.raises(InvalidSchedule, match="five fields"):
        worker.schedule("a", job, cron="0 2 * *")
    with pytest.raises(InvalidSchedule, match="unknown time zone"):
        worker.schedule("a", job, cron="0 2 * * *", tz="Europe/Nowhere")
    with pytest.raises(InvalidSchedule, match="exactly one"):
        worker.schedule("a", job)
    worker.schedule("a", job, every=timedelta(minutes=5))
    with pytest.raises(InvalidSchedule, match="already defined"):
        worker.schedule("a", job, every=60)
    worker.register("tick", lambda args: None)
    async with worker:
        with pytest.raises(InvalidSchedule, match="before start"):
            worker.schedule("b", job, every=60)
    assert list(worker.schedules) == ["a"]
