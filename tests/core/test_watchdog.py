"""The loop-stall watchdog, on a SimpleWorker: who blocked the loop is named; threads end with stop().

Thresholds are short so the stalls are short; nothing here asserts a duration,
only that a warning was (or was not) logged and what it names.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import pytest

from amqp_worker import Job, SimpleWorker
from amqp_worker._core.defaults import DEFAULT_LOOP_STALL_WARN_S

THREAD = "amqp-worker-loop-watchdog"
GUARD_S = 20.0


def stalls(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("event loop blocked")]


def recoveries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("event loop ran again")]


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


async def eventually(condition: Any) -> None:
    """Poll ``condition()`` until true; a hang guard, not a timing assertion."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.02)


async def test_an_async_handler_that_blocks_the_loop_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="amqp_worker")
    worker = SimpleWorker(loop_stall_warn_s=0.1)
    done = asyncio.Event()

    async def blocks_the_loop(args: dict[str, Any]) -> None:
        time.sleep(0.6)  # noqa: ASYNC251 - the bug under test: a sync sleep on the loop
        done.set()

    worker.register("blocks_the_loop", blocks_the_loop)
    job = Job(handler="blocks_the_loop", queue="stalls")
    async with worker:
        await worker.perform(job)
        await asyncio.wait_for(done.wait(), GUARD_S)
        await eventually(lambda: recoveries(caplog))

    [warning] = stalls(caplog)  # one per stall, however long it lasts
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert "'blocks_the_loop'" in text
    assert job.id in text
    assert "queue stalls" in text
    assert "in blocks_the_loop" in text  # where the loop thread was
    assert warning.__dict__["handler"] == "blocks_the_loop"
    assert warning.__dict__["job_id"] == job.id
    assert warning.__dict__["queue"] == "stalls"
    assert warning.__dict__["stall_s"] >= 0.1
    [recovered] = recoveries(caplog)
    assert recovered.levelno == logging.INFO
    assert "'blocks_the_loop'" in recovered.getMessage()
    assert not watchdogs()


async def test_a_stall_outside_any_handler_names_the_async_handlers_in_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="amqp_worker")
    worker = SimpleWorker(loop_stall_warn_s=0.1)
    started, release = asyncio.Event(), asyncio.Event()

    async def waits(args: dict[str, Any]) -> None:
        started.set()
        await release.wait()

    worker.register("waits", waits)
    async with worker:
        await worker.perform(Job(handler="waits"))
        await asyncio.wait_for(started.wait(), GUARD_S)
        time.sleep(0.6)  # noqa: ASYNC251 - the test itself blocks the loop, not a handler
        release.set()
    [warning] = stalls(caplog)
    text = warning.getMessage()
    assert "not in a handler's own task" in text
    assert "async handlers in progress: 'waits'" in text


async def test_a_blocking_sync_handler_runs_in_a_thread_and_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="amqp_worker")
    worker = SimpleWorker(loop_stall_warn_s=0.3)
    finished = threading.Event()

    def blocks_a_thread(args: dict[str, Any]) -> None:
        time.sleep(1.0)
        finished.set()

    worker.register("blocks_a_thread", blocks_a_thread)
    async with worker:
        await worker.perform(Job(handler="blocks_a_thread"))
        await eventually(finished.is_set)
    assert not stalls(caplog)


async def test_the_thread_runs_while_the_worker_runs_and_is_joined_by_stop() -> None:
    worker = SimpleWorker()
    assert not watchdogs()
    await worker.start()
    assert len(watchdogs()) == 1
    await worker.stop()
    assert not watchdogs()
    copy = worker.with_options(max_concurrency=2)
    await copy.start()
    assert len(watchdogs()) == 1
    await copy.stop()
    assert not watchdogs()


async def test_zero_disables_it(caplog: pytest.LogCaptureFixture) -> None:
    worker = SimpleWorker(loop_stall_warn_s=0)
    async with worker:
        assert not watchdogs()
        time.sleep(0.2)  # noqa: ASYNC251 - a stall nobody watches
    assert not stalls(caplog)
    # with_options keeps it
    async with worker.with_options(max_concurrency=2):
        assert not watchdogs()


def test_the_default_is_one_second() -> None:
    assert DEFAULT_LOOP_STALL_WARN_S == 1.0


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), (True, TypeError)],
)
def test_bad_thresholds_are_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="loop_stall_warn_s"):
        SimpleWorker(loop_stall_warn_s=value)
