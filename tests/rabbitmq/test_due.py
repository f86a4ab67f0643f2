"""The due-job hold: the pure decision, and the holder's timers. No broker."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime

import pytest

from amqp_worker._rabbitmq.due import (
    DueAction,
    DueDecision,
    DueHold,
    due_action,
    due_at_of,
    due_ms_of,
)
from amqp_worker._rabbitmq.messages import DUE_HEADER

NOW_MS = 1_700_000_000_000.0
WINDOW_MS = 1000


@pytest.mark.parametrize(
    "due_ms",
    [None, "1700000000500", True, {"ms": 1}, [1], math.nan, math.inf, -math.inf],
)
def test_a_due_time_that_is_not_a_finite_number_runs_now(due_ms: object) -> None:
    assert due_ms_of({DUE_HEADER: due_ms}) is None
    assert due_at_of({DUE_HEADER: due_ms}) is None
    assert due_action(due_ms_of({DUE_HEADER: due_ms}), NOW_MS, WINDOW_MS) == DueDecision(
        DueAction.RUN
    )


@pytest.mark.parametrize("late_ms", [0, 1, 10**9])
def test_a_job_at_or_past_its_due_time_runs_now(late_ms: int) -> None:
    assert due_action(NOW_MS - late_ms, NOW_MS, WINDOW_MS).action is DueAction.RUN


@pytest.mark.parametrize("early_ms", [1, 500, 2 * WINDOW_MS])
def test_a_job_due_within_two_windows_is_held_for_exactly_the_time_left(early_ms: int) -> None:
    assert due_action(NOW_MS + early_ms, NOW_MS, WINDOW_MS) == DueDecision(DueAction.HOLD, early_ms)


@pytest.mark.parametrize("early_ms", [2 * WINDOW_MS + 1, 10**12])
def test_a_job_further_off_is_sent_round_again(early_ms: int) -> None:
    assert due_action(NOW_MS + early_ms, NOW_MS, WINDOW_MS).action is DueAction.SEND_ROUND


def test_an_integer_due_time_works_like_a_float() -> None:
    assert due_action(int(NOW_MS) + 300, NOW_MS, WINDOW_MS) == DueDecision(DueAction.HOLD, 300)


async def test_the_holder_hands_each_item_back_when_its_timer_fires() -> None:
    released: list[str] = []
    both = asyncio.Event()

    def on_due(item: str) -> None:
        released.append(item)
        if len(released) == 2:
            both.set()

    hold: DueHold[str] = DueHold(on_due, limit=10, window_ms=WINDOW_MS)
    hold.hold("later", 30)
    hold.hold("sooner", 1)
    assert len(hold) == 2
    await asyncio.wait_for(both.wait(), 10)
    assert released == ["sooner", "later"]
    assert len(hold) == 0


async def test_release_all_cancels_the_timers_and_returns_what_was_held() -> None:
    released: list[str] = []
    hold: DueHold[str] = DueHold(released.append, limit=10, window_ms=WINDOW_MS)
    hold.hold("a", 20)
    hold.hold("b", 20)
    assert sorted(hold.release_all()) == ["a", "b"]
    assert len(hold) == 0
    await asyncio.sleep(0.05)  # past both timers: neither may fire now
    assert released == []


async def test_a_full_hold_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    hold: DueHold[int] = DueHold(lambda _: None, limit=2, window_ms=WINDOW_MS)
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        for item in range(4):
            hold.hold(item, 10_000)
    warnings = [r for r in caplog.records if "delay_prefetch limit" in r.getMessage()]
    assert len(warnings) == 1
    hold.release_all()


def test_a_due_time_beyond_year_9999_runs_now() -> None:
    from amqp_worker._rabbitmq.due import MAX_DUE_MS

    for due_ms in (MAX_DUE_MS + 1, -5, 10**20):
        assert due_ms_of({DUE_HEADER: due_ms}) is None
        assert due_action(due_ms_of({DUE_HEADER: due_ms}), NOW_MS, WINDOW_MS).action is (
            DueAction.RUN
        )
    # The latest honoured time is one a datetime holds: the dashboard shows it.
    assert due_at_of({DUE_HEADER: MAX_DUE_MS}) == datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)
    assert due_at_of({}) is None


def test_a_due_time_reads_as_given() -> None:
    assert due_ms_of({DUE_HEADER: 1_700_000_000_500}) == 1_700_000_000_500
    assert due_ms_of({DUE_HEADER: 0.5}) == 0.5
    assert due_at_of({DUE_HEADER: 1_700_000_000_500}) == datetime(
        2023, 11, 14, 22, 13, 20, 500000, UTC
    )
