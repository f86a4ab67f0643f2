"""HandlerThreads: sync handlers' threads, results handed back to the loop in batches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from amqp_worker._core.handler_threads import HandlerThreads

GUARD_S = 10.0


async def test_results_and_exceptions_come_back_to_the_awaiting_task() -> None:
    threads = HandlerThreads(4)
    try:
        assert await threads.run(lambda: 41 + 1) == 42
        with pytest.raises(ZeroDivisionError):
            await threads.run(lambda: 1 / 0)
    finally:
        threads.shutdown()


async def test_calls_never_run_on_the_loop_thread() -> None:
    threads = HandlerThreads(2)
    try:
        ran_on = await threads.run(threading.get_ident)
        assert ran_on != threading.get_ident()
    finally:
        threads.shutdown()


async def test_each_call_in_flight_has_a_thread_so_a_blocked_one_delays_no_other() -> None:
    threads = HandlerThreads(3)
    release = threading.Event()
    try:
        blocked = [threads.run(lambda: release.wait(GUARD_S)) for _ in range(2)]
        # Two calls hold two threads; a third still runs at once.
        assert await asyncio.wait_for(threads.run(lambda: "free"), GUARD_S) == "free"
        assert threads.threads == 3
        release.set()
        assert await asyncio.gather(*blocked) == [True, True]
    finally:
        release.set()
        threads.shutdown()


async def test_threads_are_reused_and_never_exceed_the_limit() -> None:
    threads = HandlerThreads(2)
    try:
        for batch in range(5):
            results = await asyncio.gather(*(threads.run(lambda i=i: i) for i in range(2)))
            assert results == [0, 1], batch
        assert threads.threads <= 2
    finally:
        threads.shutdown()


async def test_many_quick_calls_all_complete() -> None:
    threads = HandlerThreads(8)
    try:
        results = await asyncio.gather(*(threads.run(lambda i=i: i * 2) for i in range(2000)))
        assert results == [i * 2 for i in range(2000)]
    finally:
        threads.shutdown()


async def test_stop_iteration_becomes_a_runtime_error() -> None:
    def stop() -> None:
        raise StopIteration("done")

    threads = HandlerThreads(1)
    try:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await threads.run(stop)
    finally:
        threads.shutdown()


async def test_shutdown_cancels_calls_not_started_and_refuses_new_ones() -> None:
    threads = HandlerThreads(1)
    release = threading.Event()
    started = threading.Event()

    def block() -> str:
        started.set()
        release.wait(GUARD_S)
        return "finished"

    running = threads.run(block)
    await asyncio.to_thread(started.wait, GUARD_S)
    # The one thread is busy and max_threads is 1: this call waits in the queue.
    queued = threads.run(lambda: "never")
    threads.shutdown()
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.run(lambda: None)
    release.set()
    # A call already running ends on its own, and its result still arrives.
    assert await asyncio.wait_for(running, GUARD_S) == "finished"


def test_max_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerThreads(0)
