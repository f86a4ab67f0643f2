"""Behaviour only the in-process SimpleWorker has."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from amqp_worker import HandlerNotRegistered, Job, SimpleWorker


async def test_perform_of_an_unregistered_handler_raises() -> None:
    worker = SimpleWorker()
    with pytest.raises(HandlerNotRegistered, match="'nope'"):
        await worker.perform(Job(handler="nope"))
    with pytest.raises(HandlerNotRegistered):
        await worker.perform_in(Job(handler="nope"), 1)


async def test_stop_counts_the_jobs_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    worker = SimpleWorker(max_concurrency=1)
    started = asyncio.Event()

    async def slow(args: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    worker.register("slow", slow)
    await worker.start()
    await worker.perform(Job(handler="slow"))  # runs, then is cancelled
    await worker.perform(Job(handler="slow"))  # waits for the only slot
    await worker.perform_in(Job(handler="slow"), 3600)  # delayed
    await asyncio.wait_for(started.wait(), 10)
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        await worker.stop(timeout_s=0)
    assert "dropped 2 queued or delayed job(s) and cancelled 1 running" in caplog.text


async def test_delayed_jobs_due_before_start_wait_for_it() -> None:
    worker = SimpleWorker()
    done = asyncio.Event()
    worker.register("h", lambda args: done.set())
    await worker.perform_in(Job(handler="h"), 0.01)
    await asyncio.sleep(0.1)
    assert not done.is_set()
    async with worker:
        await asyncio.wait_for(done.wait(), 10)


def test_max_concurrency_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SimpleWorker(max_concurrency=0)
    with pytest.raises(TypeError):
        SimpleWorker(max_concurrency=2.5)  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(SimpleWorker(max_concurrency=3)) == "<SimpleWorker stopped max_concurrency=3>"
