"""Limits as pure rules: parsing, checks, the token plan, snoozes, bucket and window."""

from __future__ import annotations

import pytest

from amqp_worker import Job
from amqp_worker._core.limits import (
    MIN_FEED_INTERVAL_S,
    Limits,
    SlidingWindow,
    TokenBucket,
    feed_interval_s,
    parse_rate,
    rate_parts,
    snooze_s,
)


@pytest.mark.parametrize(
    ("rate", "per_s"),
    [("50/s", 50.0), ("10/min", 10 / 60), ("100/h", 100 / 3600), (" 2.5 / second ", 2.5)],
)
def test_parse_rate(rate: str, per_s: float) -> None:
    assert parse_rate(rate) == pytest.approx(per_s)


def test_rate_parts_keep_the_count_and_the_unit() -> None:
    assert rate_parts("10/min") == (10.0, 60.0)


@pytest.mark.parametrize("rate", ["", "fast", "5", "5/day", "-1/s", "0/s", "inf/s"])
def test_bad_rates_are_refused(rate: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(rate)


def test_no_limit_is_none_and_burst_defaults_to_one() -> None:
    assert Limits.of(None, None, None) is None
    made = Limits.of("5/s", None, None)
    assert made is not None
    assert made.burst == 1
    assert made.token_burst == 1


def test_a_per_key_limit_reads_its_key() -> None:
    by_field = Limits.of("5/s", None, 2, "tenant")
    by_function = Limits.of(None, None, 2, lambda job: job.args.get("t"))
    assert by_field is not None
    assert by_function is not None
    job = Job(handler="h", queue="q", args={"tenant": 7, "t": "x"})
    assert by_field.key_of(job) == "7"
    assert by_function.key_of(job) == "x"
    assert by_field.key_of(Job(handler="h", queue="q")) == ""  # no key: the shared one
    assert by_field.token_burst is None
    assert by_field.window() == (5, 1.0)
    assert by_function.key_name == "<lambda>"


def test_the_token_leader_writes_at_most_every_10_ms() -> None:
    assert feed_interval_s(50) == pytest.approx(0.02)
    assert feed_interval_s(10_000) == MIN_FEED_INTERVAL_S


def test_snoozes_double_up_to_the_window() -> None:
    limits = Limits.of("4/s", None, None, "k")
    assert limits is not None
    assert [snooze_s(limits, n) for n in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert snooze_s(limits, 10_000) == 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_bucket_starts_full_and_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock)
    assert bucket.available == 3
    for _ in range(3):
        await bucket.take()
    assert bucket.available == 0
    clock.now += 1.0
    assert bucket.available == 2
    clock.now += 100.0
    assert bucket.available == 3  # never more than the burst


async def test_a_sliding_window_lets_count_in_and_frees_room_as_starts_age() -> None:
    clock = Clock()
    window = SlidingWindow(2, 1.0, clock)
    await window.take()
    clock.now += 0.5
    await window.take()
    clock.now += 0.6  # the first start is now 1.1 s old
    await window.take()
    assert list(window._starts) == [100.5, 101.1]
