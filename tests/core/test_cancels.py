"""CancelBook and RunningAttempt: what one worker remembers of cancels, without a worker."""

from __future__ import annotations

import asyncio
import time

import pytest

from amqp_worker import JobCancelled
from amqp_worker._core import cancels
from amqp_worker._core.cancels import CancelBook, check_job_ids


def test_a_cancelled_id_is_remembered_for_ttl_s_only() -> None:
    book = CancelBook(ttl_s=60)
    book.add("a")
    book.add("a")  # idempotent
    book.add("old", time.time() - 61)  # older than the retention: ignored
    book.add("recent", time.time() - 59)
    assert "a" in book
    assert "recent" in book
    assert "old" not in book
    assert "b" not in book
    assert len(book) == 2


def test_ids_past_ttl_s_are_forgotten_as_new_ones_come() -> None:
    book = CancelBook(ttl_s=10)
    book.add("stale", time.time() - 9.9)
    time.sleep(0.15)
    assert "stale" not in book  # the lookup checks the age
    book.add("fresh")
    assert len(book) == 1  # and an add drops it from memory


def test_the_book_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cancels, "MAX_REMEMBERED", 3)
    book = CancelBook()
    for n in range(5):
        book.add(f"j{n}")
    assert len(book) == 3
    assert "j0" not in book
    assert "j4" in book


def test_a_cancel_reaches_each_running_attempt_of_its_id() -> None:
    book = CancelBook()
    first, second, other = book.begin("j"), book.begin("j"), book.begin("k")
    signal = first.signal  # made before the cancel
    book.add("j")
    assert first.requested
    assert second.requested
    assert not other.requested
    assert signal.is_set()
    assert second.signal.is_set()  # made after the cancel: set at once
    assert isinstance(first.error(), JobCancelled)
    assert "finished after the cancel" in str(first.error())
    for attempt in (first, second, other):
        book.end(attempt)
    assert book.running == 0


async def test_an_async_attempt_is_interrupted_only_while_its_handler_runs() -> None:
    book = CancelBook()
    outcome: list[bool] = []

    async def attempt_body() -> None:
        attempt = book.begin("j")
        task = asyncio.current_task()
        assert task is not None
        attempt.enter(task)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            outcome.append(attempt.leave(raised_cancelled=True))
        book.end(attempt)
        await asyncio.sleep(0)  # not cancelled again: the interruption is over
        assert "interrupted" in str(attempt.error())

    task = asyncio.ensure_future(attempt_body())
    await asyncio.sleep(0.01)
    book.add("j")
    await asyncio.wait_for(task, 5)
    assert outcome == [True]


async def test_a_cancelled_error_from_elsewhere_is_not_the_cancels() -> None:
    book = CancelBook()
    attempt = book.begin("j")
    task = asyncio.current_task()
    assert task is not None
    attempt.enter(task)
    assert attempt.leave(raised_cancelled=True) is False  # stop() cancelled it: hand back
    book.end(attempt)


def test_ids_are_checked() -> None:
    assert check_job_ids(["a", "b"]) == ["a", "b"]
    with pytest.raises(TypeError):
        check_job_ids([1])
    with pytest.raises(ValueError, match="job id"):
        check_job_ids([""])
