"""Schedules as pure functions of time: cron in zones across DST, intervals, missed ticks.

No clock is read and nothing sleeps: every case passes the instants it is about.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from amqp_worker import Job
from amqp_worker._core.schedule import MAX_CATCH_UP, Schedule, tick_id
from amqp_worker.errors import InvalidSchedule

JOB = Job(handler="report", queue="reports", args={"kind": "daily"})
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def cron(expr: str, tz: str = "UTC", **kwargs: object) -> Schedule:
    return Schedule.build("s", JOB, cron=expr, tz=tz, **kwargs)  # type: ignore[arg-type]


def fires(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    found, tick = [], after
    for _ in range(count):
        tick = schedule.next_tick(tick)
        found.append(tick)
    return found


# -- building -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": 5}, "exactly one"),
        ({"every": 0.5}, "at least 1s"),
        ({"every": timedelta(milliseconds=10)}, "at least 1s"),
        ({"every": float("inf")}, "at least 1s"),
        ({"every": "5"}, "timedelta or a number"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "0 0 * * * *"}, "five fields"),
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "0 2 * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 2 * * *", "tz": ""}, "IANA zone name"),
        ({"every": 5, "missed": "twice"}, "missed must be"),
    ],
)
def test_bad_definitions_fail_at_once_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        Schedule.build("s", JOB, **kwargs)  # type: ignore[arg-type]


def test_bad_names_and_templates_fail() -> None:
    with pytest.raises(InvalidSchedule, match="must not be empty"):
        Schedule.build("", JOB, every=5)
    with pytest.raises(InvalidSchedule, match="'@'"):
        Schedule.build("a@b", JOB, every=5)
    with pytest.raises(InvalidSchedule, match="needs a Job"):
        Schedule.build("s", {"handler": "x"}, every=5)  # type: ignore[arg-type]


def test_invalid_schedule_is_a_value_error_and_names_like_mon_fri_work() -> None:
    assert issubclass(InvalidSchedule, ValueError)
    weekdays = cron("0 9 * * mon-fri", "Europe/Berlin")
    # Friday 2026-12-04 09:00 Berlin, then Monday 2026-12-07.
    assert fires(weekdays, utc(2026, 12, 4, 7, 0), 2) == [utc(2026, 12, 4, 8), utc(2026, 12, 7, 8)]


# -- cron across DST (Europe/Berlin) ----------------------------------------------------


def test_spring_forward_a_time_that_does_not_exist_fires_once_at_the_next_valid_instant() -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    daily = cron("30 2 * * *", "Europe/Berlin")
    ticks = fires(daily, datetime(2026, 3, 28, 12, tzinfo=BERLIN), 3)
    assert ticks == [
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST, the first valid instant after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST again
        utc(2026, 3, 31, 0, 30),
    ]


def test_fall_back_a_time_that_occurs_twice_fires_once_at_the_first() -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    daily = cron("30 2 * * *", "Europe/Berlin")
    ticks = fires(daily, datetime(2026, 10, 24, 12, tzinfo=BERLIN), 2)
    assert ticks == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]  # CEST, then CET


def test_frequent_expressions_run_on_real_time_through_the_repeated_hour() -> None:
    half_hourly = cron("*/30 * * * *", "Europe/Berlin")
    ticks = fires(half_hourly, utc(2026, 10, 24, 23, 50), 5)
    # Every 30 minutes of real time, including both 02:00 and both 02:30.
    assert ticks == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * i) for i in range(5)]


def test_ticks_are_never_early_and_strictly_after() -> None:
    hourly = cron("0 * * * *")
    assert hourly.next_tick(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 11)
    assert hourly.next_tick(utc(2026, 1, 1, 9, 59, 59, 999999)) == utc(2026, 1, 1, 10)
    assert hourly.last_tick(utc(2026, 1, 1, 10)) == utc(2026, 1, 1, 10)
    assert hourly.last_tick(utc(2026, 1, 1, 10, 59)) == utc(2026, 1, 1, 10)


# -- zones with half-hour offsets ---------------------------------------------------------


def test_a_zone_with_a_30_minute_offset() -> None:
    kolkata = cron("0 9 * * *", "Asia/Kolkata")  # UTC+05:30, no DST
    assert fires(kolkata, utc(2026, 6, 1), 2) == [utc(2026, 6, 1, 3, 30), utc(2026, 6, 2, 3, 30)]


def test_a_zone_whose_dst_shift_is_30_minutes() -> None:
    # Lord Howe Island: +11 in summer, +10:30 in winter; 2026-04-05 02:00 falls back to 01:30.
    lord_howe = cron("45 1 * * *", "Australia/Lord_Howe")
    ticks = fires(lord_howe, datetime(2026, 4, 4, 12, tzinfo=ZoneInfo("Australia/Lord_Howe")), 2)
    # 01:45 occurs twice on 2026-04-05: it fires once, at the first (+11:00).
    assert ticks == [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]


# -- every= ---------------------------------------------------------------------------------


def test_every_ticks_on_multiples_of_the_interval_since_the_epoch() -> None:
    every = Schedule.build("hb", JOB, every=timedelta(seconds=30))
    assert every.next_tick(utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 30)
    assert every.next_tick(utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1, 0)
    assert every.last_tick(utc(2026, 1, 1, 0, 0, 59)) == utc(2026, 1, 1, 0, 0, 30)
    # Two replicas started at different moments agree on the ticks.
    late = Schedule.build("hb", JOB, every=30.0)
    assert late.next_tick(utc(2026, 1, 1, 0, 0, 29)) == every.next_tick(utc(2026, 1, 1, 0, 0, 1))


# -- due ticks and missed= ----------------------------------------------------------------


def every_second(missed: str) -> Schedule:
    return Schedule.build("hb", JOB, every=1, missed=missed)  # type: ignore[arg-type]


def test_while_leading_each_tick_is_due_once_as_it_comes() -> None:
    hb = every_second("once")
    led = utc(2026, 1, 1, 0, 0, 0)
    assert hb.due(None, led, utc(2026, 1, 1, 0, 0, 0, 500000)) == []
    assert hb.due(None, led, utc(2026, 1, 1, 0, 0, 1, 3000)) == [utc(2026, 1, 1, 0, 0, 1)]
    last = utc(2026, 1, 1, 0, 0, 1)
    assert hb.due(last, led, utc(2026, 1, 1, 0, 0, 1, 900000)) == []
    assert hb.due(last, led, utc(2026, 1, 1, 0, 0, 2)) == [utc(2026, 1, 1, 0, 0, 2)]


@pytest.mark.parametrize(
    ("missed", "expected"),
    [("skip", []), ("once", [5]), ("all", [1, 2, 3, 4, 5])],
)
def test_ticks_missed_while_no_replica_led_follow_the_missed_policy(
    missed: str, expected: list[int]
) -> None:
    hb = every_second(missed)
    last_fired = utc(2026, 1, 1, 0, 0, 0)
    led_since = utc(2026, 1, 1, 0, 0, 5, 400000)  # all workers were down for 5 ticks
    now = led_since + timedelta(milliseconds=10)
    assert hb.due(last_fired, led_since, now) == [utc(2026, 1, 1, 0, 0, s) for s in expected]
    # Ticks after the new leader took over are due normally, whatever the policy.
    later = utc(2026, 1, 1, 0, 0, 6)
    assert hb.due(utc(2026, 1, 1, 0, 0, 5), led_since, later) == [later]


def test_all_replays_at_most_max_catch_up_ticks() -> None:
    hb = every_second("all")
    last_fired = utc(2026, 1, 1)
    led_since = last_fired + timedelta(days=1)
    due = hb.due(last_fired, led_since, led_since)
    assert len(due) == MAX_CATCH_UP
    assert due[-1] == led_since  # the latest ones


def test_a_schedule_never_fired_replays_nothing_before_its_first_leader() -> None:
    daily = cron("0 2 * * *", "Europe/Berlin", missed="all")
    led = utc(2026, 6, 1, 12)
    assert daily.due(None, led, led + timedelta(seconds=1)) == []


# -- the jobs of ticks ----------------------------------------------------------------------


def test_each_tick_enqueues_the_template_with_a_deterministic_id_and_its_tick() -> None:
    daily = Schedule.build("nightly-report", JOB, cron="0 2 * * *", tz="Europe/Berlin")
    tick = utc(2026, 6, 1, 0, 0)
    job = daily.tick_job(tick)
    assert job.id == tick_id("nightly-report", tick) == "nightly-report@2026-06-01T00:00:00.000Z"
    assert job.scheduled_at == tick
    assert (job.handler, job.queue, job.args) == (JOB.handler, JOB.queue, JOB.args)
    again = Job.from_json(job.to_json())
    assert again.scheduled_at == tick
    assert again.id == job.id
    # Ordinary jobs carry no scheduled_at on the wire.
    assert b"scheduled_at" not in JOB.to_json()


def test_definitions_compare_timing_zone_policy_and_template() -> None:
    one = Schedule.build("r", JOB, cron="0 2 * * *", tz="Europe/Berlin")
    same = Schedule.build(
        "r", JOB.model_copy(update={"id": "other"}), cron="0 2 * * *", tz="Europe/Berlin"
    )
    other = Schedule.build("r", JOB, cron="0 3 * * *", tz="Europe/Berlin")
    assert one.definition() == same.definition()
    assert one.definition() != other.definition()
    assert one.describe() == "cron 0 2 * * * Europe/Berlin"
    assert Schedule.build("h", JOB, every=30).describe() == "every 30s"
