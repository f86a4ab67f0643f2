"""``amqp_worker._loop_thread.LoopThread``: an event loop in a daemon thread, for blocking callers."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from amqp_worker._loop_thread import LoopThread, Unanswered

ROOT = Path(__file__).parent.parent

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


class Boom(Exception):
    pass


def named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def fresh_name() -> str:
    return f"test-loop-{uuid.uuid4().hex[:8]}"


async def answer(value: object) -> object:
    return value


async def wait_for(event: threading.Event) -> None:
    # In progress until the test lets it end (a publish awaiting its confirm); the
    # wait runs in the loop's executor, so the loop stays free for other calls.
    await asyncio.to_thread(event.wait)


@pytest.mark.timeout(30)
def test_nothing_starts_until_the_first_run_and_close_ends_the_thread() -> None:
    stopped_on: list[str] = []

    async def on_stop() -> None:
        stopped_on.append(threading.current_thread().name)

    name = fresh_name()
    runner = LoopThread(name, on_stop=on_stop)
    assert named(name) == []
    assert runner.state == "idle"
    assert runner.run(answer(42), timeout_s=10) == 42
    assert runner.run(answer("again"), timeout_s=10) == "again"
    assert len(named(name)) == 1
    assert runner.state == "open"
    runner.close()
    assert named(name) == []
    assert stopped_on == [name]
    assert runner.closed
    assert runner.state == "closed"


@pytest.mark.timeout(30)
def test_errors_reach_the_caller_as_the_very_object() -> None:
    error = Boom("no")

    async def fail() -> None:
        raise error

    with LoopThread(fresh_name()) as runner, pytest.raises(Boom) as info:
        runner.run(fail(), timeout_s=10)
    assert info.value is error
    # The traceback still shows where it was raised, on the loop thread.
    assert any(entry.name == "fail" for entry in info.traceback)


@pytest.mark.timeout(30)
def test_the_coroutine_sees_the_callers_contextvars() -> None:
    async def current() -> str:
        return request_id.get()

    with LoopThread(fresh_name()) as runner:

        def view(rid: str) -> str:
            request_id.set(rid)
            return runner.run(current(), timeout_s=10)

        with ThreadPoolExecutor(max_workers=2) as pool:
            assert list(pool.map(view, ["req-a", "req-b"])) == ["req-a", "req-b"]
        assert runner.run(current(), timeout_s=10) == "none"


@pytest.mark.timeout(60)
def test_many_threads_run_at_once_on_the_one_loop() -> None:
    # All 8 must be in progress together to pass the barrier: serialized calls would hang.
    barrier = asyncio.Barrier(8)

    async def meet() -> str:
        await barrier.wait()
        return threading.current_thread().name

    name = fresh_name()
    with LoopThread(name) as runner, ThreadPoolExecutor(max_workers=8) as pool:
        ran_on = list(pool.map(lambda _: runner.run(meet(), timeout_s=30), range(8)))
    assert ran_on == [name] * 8


@pytest.mark.timeout(30)
async def test_calls_from_a_thread_running_an_event_loop_are_refused() -> None:
    name = fresh_name()
    runner = LoopThread(name, owner="Thing", in_loop_hint="await it instead")
    with pytest.raises(RuntimeError, match=r"Thing blocks.*event loop.*: await it instead"):
        runner.run(answer(1), timeout_s=10)
    assert named(name) == []  # refused before anything started
    gc.collect()  # the refused coroutine was closed: no "never awaited" warning

    # Nor from its own loop (a hook calling back in), which would deadlock.
    async def reenter() -> None:
        runner.run(answer(2), timeout_s=10)

    async def close_from_inside() -> None:
        runner.close()

    # From another thread, with a loop running here, it works; close() may run here.
    with pytest.raises(RuntimeError, match="event loop"):
        await asyncio.to_thread(runner.run, reenter(), 10)
    with pytest.raises(RuntimeError, match="its own thread"):
        await asyncio.to_thread(runner.run, close_from_inside(), 10)
    runner.close()
    assert named(name) == []


@pytest.mark.timeout(30)
def test_close_is_idempotent_and_later_calls_are_refused() -> None:
    name = fresh_name()
    runner = LoopThread(name, owner="Thing")
    runner.run(answer(1), timeout_s=10)
    runner.close()
    runner.close()
    runner.close(timeout_s=0)
    with pytest.raises(RuntimeError, match="this Thing is closed"):
        runner.run(answer(1), timeout_s=10)
    never_used = LoopThread(name)
    never_used.close()
    never_used.close()
    with pytest.raises(RuntimeError, match="closed"):
        never_used.run(answer(1), timeout_s=10)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_s"):
            LoopThread(name).close(timeout_s=bad)
    gc.collect()  # the refused coroutines were closed: no "never awaited" warning
    assert named(name) == []


@pytest.mark.timeout(30)
def test_a_call_past_its_timeout_releases_its_caller_and_runs_on() -> None:
    release, finished = threading.Event(), threading.Event()

    async def slow() -> None:
        await wait_for(release)
        finished.set()

    with LoopThread(fresh_name()) as runner:
        with pytest.raises(Unanswered, match="no answer") as info:
            runner.run(slow(), timeout_s=0.05)
        assert not info.value.abandoned
        # Not cancelled: it ends by itself once let.
        release.set()
        assert finished.wait(10)


@pytest.mark.timeout(30)
def test_close_lets_calls_in_progress_finish_before_on_stop() -> None:
    events: list[str] = []
    started, proceed = threading.Event(), threading.Event()

    async def call() -> str:
        started.set()
        await wait_for(proceed)
        events.append("call ended")
        return "done"

    async def on_stop() -> None:
        events.append("on_stop")

    name = fresh_name()
    runner = LoopThread(name, on_stop=on_stop)
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(runner.run, call(), 30)
        assert started.wait(10)
        closing = threading.Thread(target=runner.close, kwargs={"timeout_s": None})
        closing.start()
        proceed.set()
        closing.join()
        assert result.result() == "done"
    assert events == ["call ended", "on_stop"]
    assert named(name) == []


@pytest.mark.timeout(60)
def test_close_gives_up_after_timeout_s_without_cancelling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    started, release = threading.Event(), threading.Event()

    async def call() -> None:
        started.set()
        await wait_for(release)
        events.append("call ended")
        raise Boom("after its caller left")

    async def on_stop() -> None:
        events.append("on_stop")

    name = fresh_name()
    runner = LoopThread(name, on_stop=on_stop)
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(runner.run, call(), 30)
        assert started.wait(10)
        runner.close(timeout_s=0)
        error = result.exception()
    assert isinstance(error, Unanswered)
    assert error.abandoned
    assert "closed before" in str(error)
    # Their tracebacks reach the call's future, keeping the copy checked below alive.
    del error, result
    assert events == []  # the thread waits for the call before on_stop
    release.set()
    for thread in named(name):
        thread.join()
    assert events == ["call ended", "on_stop"]
    # Nobody was left to read the call's error, and asyncio must not complain of it.
    gc.collect()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.timeout(30)
def test_on_stop_is_bounded_and_its_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    async def fail() -> None:
        raise Boom("closing failed")

    for on_stop, logged in ((hang, "did not end within"), (fail, "on_stop failed")):
        name = fresh_name()
        runner = LoopThread(name, on_stop=on_stop, stop_timeout_s=0.1)
        runner.run(answer(1), timeout_s=10)
        runner.close()
        assert named(name) == []
        assert logged in caplog.text


#: Leaves a loop thread open, with a call in progress, and exits without close().
FORGOTTEN_CLOSE = """
import asyncio
from amqp_worker._loop_thread import LoopThread, Unanswered

runner = LoopThread("forgotten")
print(runner.run(asyncio.sleep(0, "ran"), timeout_s=10), flush=True)
try:
    runner.run(asyncio.sleep(3600), timeout_s=0.01)
except Unanswered:
    print("released", flush=True)
"""


@pytest.mark.timeout(60)
def test_a_forgotten_close_does_not_keep_the_process_alive() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORGOTTEN_CLOSE],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ran", "released"]


#: Starts a loop thread, forks; the child must be refused, the parent go on.
FORK = """
import asyncio, os
from amqp_worker._loop_thread import LoopThread

runner = LoopThread("forked", owner="Thing")
runner.run(asyncio.sleep(0), timeout_s=10)
pid = os.fork()
if pid == 0:
    code = 1
    coroutine = asyncio.sleep(0)
    try:
        runner.run(coroutine, timeout_s=10)
    except RuntimeError as exc:
        code = 0 if "another process" in str(exc) else 2
    runner.close()  # leaves the parent's loop alone, and returns
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
print("parent", runner.run(asyncio.sleep(0, "ran"), timeout_s=10), flush=True)
runner.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(60)
def test_a_forked_child_is_refused_and_the_parent_goes_on() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORK],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child 0", "parent ran"]
