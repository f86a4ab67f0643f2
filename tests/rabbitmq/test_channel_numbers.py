"""Channel numbers go round: a number just freed is not handed out again at once."""

from __future__ import annotations

from typing import Any

from amqp_worker._rabbitmq.channel_numbers import DEFAULT_CHANNEL_MAX, ChannelNumbers


class Kept:
    """A robust channel as ChannelNumbers sees it."""

    def __init__(self, number: int, closed: bool = False) -> None:
        self.number = number
        self.is_closed = closed


def test_numbers_go_round_instead_of_reusing_the_one_just_freed() -> None:
    numbers = ChannelNumbers()
    assert [numbers.next(set(), 5) for _ in range(7)] == [1, 2, 3, 4, 5, 1, 2]


def test_numbers_in_use_or_kept_by_a_robust_channel_are_skipped() -> None:
    numbers = ChannelNumbers()
    kept: Any = Kept(2)
    numbers.keep(kept)
    numbers.keep(Kept(3, closed=True))  # type: ignore[arg-type]
    assert [numbers.next({1}, 4) for _ in range(3)] == [3, 4, 3]


def test_none_when_every_number_is_taken_and_rabbitmqs_default_without_a_limit() -> None:
    assert ChannelNumbers().next({1, 2}, 2) is None
    numbers = ChannelNumbers()
    for _ in range(DEFAULT_CHANNEL_MAX):
        numbers.next(set(), None)
    assert numbers.next(set(), None) == 1
