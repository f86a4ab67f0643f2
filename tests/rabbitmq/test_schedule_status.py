"""The schedule leader's status message: one typed codec for the leader, the CLI and the dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from amqp_worker import Job
from amqp_worker._core.schedule import Schedule
from amqp_worker._rabbitmq.schedule_status import ScheduleStatus

NOW = datetime(2026, 12, 5, 21, 0, 30, tzinfo=UTC)
NIGHTLY = Schedule.build("nightly", Job(handler="report"), cron="0 2 * * *", tz="Europe/Paris")
OFTEN = Schedule.build("often", Job(handler="ping"), every=timedelta(seconds=10))


def status() -> ScheduleStatus:
    fired = {"often": NOW - timedelta(seconds=10)}
    return ScheduleStatus.of(
        "host:42", "amqp://127.0.0.1:5672", NOW, {"often": OFTEN, "nightly": NIGHTLY}, fired
    )


def test_a_status_names_each_schedule_in_order_with_its_last_and_next_tick() -> None:
    made = status()
    assert [row.name for row in made.schedules] == ["nightly", "often"]
    nightly, often = made.schedules
    assert nightly.last_tick is None
    assert nightly.next_tick == NIGHTLY.next_tick(NOW)
    assert (nightly.schedule, nightly.tz, nightly.missed) == (
        NIGHTLY.describe(),
        "Europe/Paris",
        "once",
    )
    assert often.last_tick == NOW - timedelta(seconds=10)
    assert often.next_tick == datetime(2026, 12, 5, 21, 0, 40, tzinfo=UTC)


def test_it_survives_the_wire_and_keeps_iso_times_with_their_offset() -> None:
    made = status()
    body = made.encode()
    assert ScheduleStatus.decode(body) == made
    wire = json.loads(body)
    assert list(wire) == ["leader", "node", "at", "schedules"]
    assert wire["at"] == "2026-12-05T21:00:30+00:00"
    assert wire["schedules"][1]["last_tick"] == "2026-12-05T21:00:20+00:00"
    assert wire["schedules"][0]["last_tick"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"leader": "x"}',
        b'{"leader": "x", "node": null, "at": "2026-01-01T00:00:00", "schedules": []}',
        b'{"leader": "x", "node": null, "at": "2026-01-01T00:00:00+00:00", "schedules": [{}]}',
    ],
)
def test_anything_else_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a schedule status message"):
        ScheduleStatus.decode(body)
