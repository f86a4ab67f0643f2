"""The crash-loop rule: run, quarantine with a higher count, or park as crashed. No broker."""

from __future__ import annotations

import pytest

from amqp_worker._rabbitmq.messages import DELIVERIES_HEADER
from amqp_worker._rabbitmq.quarantine import Verdict, VerdictKind, deliveries, verdict


@pytest.mark.parametrize("count", [None, 0, 2, 99])
def test_a_first_delivery_runs_whatever_its_count(count: int | None) -> None:
    headers = {} if count is None else {DELIVERIES_HEADER: count}
    assert verdict(False, headers, 5) == Verdict(VerdictKind.RUN, count or 0)


def test_a_redelivered_job_is_quarantined_with_one_more() -> None:
    assert verdict(True, None, 5) == Verdict(VerdictKind.QUARANTINE, 1)
    assert verdict(True, {DELIVERIES_HEADER: 3}, 5) == Verdict(VerdictKind.QUARANTINE, 4)


def test_the_last_allowed_delivery_parks_it() -> None:
    assert verdict(True, {DELIVERIES_HEADER: 4}, 5) == Verdict(VerdictKind.PARK, 5)
    assert verdict(True, {DELIVERIES_HEADER: 40}, 5) == Verdict(VerdictKind.PARK, 41)
    assert verdict(True, None, 1) == Verdict(VerdictKind.PARK, 1)


@pytest.mark.parametrize("value", ["3", -1, True, 2.5, [1], {"n": 1}])
def test_a_count_that_is_not_a_count_reads_as_zero(value: object) -> None:
    assert deliveries({DELIVERIES_HEADER: value}) == 0
