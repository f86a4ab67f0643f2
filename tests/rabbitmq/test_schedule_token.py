"""The schedule token: its JSON, and merging tokens and proposals (pure, no broker)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from amqp_worker import Job
from amqp_worker._core.schedule import Schedule
from amqp_worker._rabbitmq.schedule_token import (
    ScheduleState,
    merge_states,
    parse_token,
    schedule_from,
    token_body,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAILY = Schedule.build("r", Job(handler="report"), cron="0 2 * * *", tz="Europe/Berlin")
HOURLY = Schedule.build("r", Job(handler="report"), cron="0 * * * *", tz="Europe/Berlin")


def state(schedule: Schedule, declared_s: int, last_s: int | None = None) -> ScheduleState:
    last = T0 + timedelta(seconds=last_s) if last_s is not None else None
    return ScheduleState(schedule.definition(), T0 + timedelta(seconds=declared_s), last)


def test_a_token_survives_its_json() -> None:
    states = {"r": state(DAILY, 1, 60), "h": state(HOURLY, 2)}
    assert parse_token(token_body(states)) == states


@pytest.mark.parametrize("body", [b"[]", b"{}", b'{"schedules": 3}', b'{"schedules": {"r": {}}}'])
def test_what_is_not_a_token_is_refused(body: bytes) -> None:
    with pytest.raises((ValueError, KeyError)):
        parse_token(body)


def test_merging_keeps_the_latest_tick_and_the_newest_definition() -> None:
    older = {"r": state(DAILY, declared_s=1, last_s=500)}
    newer = {"r": state(HOURLY, declared_s=2, last_s=100)}
    merged, conflicts = merge_states(older, newer)
    assert merged["r"].definition == HOURLY.definition()
    assert merged["r"].last_tick == T0 + timedelta(seconds=500)
    ((name, lost, won),) = conflicts
    assert (name, lost.definition, won.definition) == ("r", DAILY.definition(), HOURLY.definition())


def test_merging_is_commutative_and_idempotent_in_any_order() -> None:
    views = [
        {"r": state(DAILY, 1, 10)},
        {"r": state(HOURLY, 3)},
        {"r": state(DAILY, 2, 30), "h": state(HOURLY, 1, 5)},
        {},
    ]
    results = set()
    for order in itertools.permutations(views):
        merged: dict[str, ScheduleState] = {}
        for view in order:
            merged, _ = merge_states(merged, view)
            merged, _ = merge_states(merged, view)  # seeing a token twice changes nothing
        results.add(token_body(merged))
    assert len(results) == 1


def test_identical_definitions_are_no_conflict() -> None:
    _, conflicts = merge_states({"r": state(DAILY, 1)}, {"r": state(DAILY, 5, 9)})
    assert conflicts == []


def test_a_token_definition_becomes_a_schedule_again() -> None:
    again = schedule_from("r", state(DAILY, 1))
    assert again.definition() == DAILY.definition()
