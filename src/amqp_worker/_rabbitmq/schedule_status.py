"""The schedule leader's status message, typed: written by the leader, read by people.

After each write of the token, the leader publishes a :class:`ScheduleStatus`
to ``<name>.schedules.status`` (a queue that keeps only its newest message);
``amqp-worker schedules`` and the dashboard's Schedules page read it. This is
the one codec for that message, so all three agree on it. Times travel as ISO
8601 with their offset. No broker here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer, ValidationError

from amqp_worker._core.schedule import Schedule

__all__ = ["STATUS_TYPE", "ScheduleRow", "ScheduleStatus"]

#: The AMQP ``type`` of a status message.
STATUS_TYPE = "aw-schedule-status"

# isoformat() keeps the "+00:00" the first status messages carried (pydantic would write "Z").
Moment = Annotated[AwareDatetime, PlainSerializer(datetime.isoformat, return_type=str)]


class ScheduleRow(BaseModel):
    """One schedule as the leader fires it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    schedule: str
    """Its cron expression or interval, as :meth:`Schedule.describe` writes it."""
    tz: str
    missed: str
    last_tick: Moment | None
    """The last tick fired; None before the first."""
    next_tick: Moment


class ScheduleStatus(BaseModel):
    """Who leads the schedules, as of when, and each schedule's last and next tick."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    leader: str
    """The leading replica: ``host:pid`` unless the worker names itself."""
    node: str | None
    """The broker node the leader is connected to."""
    at: Moment
    schedules: tuple[ScheduleRow, ...]

    @classmethod
    def of(
        cls,
        leader: str,
        node: str | None,
        now: datetime,
        schedules: Mapping[str, Schedule],
        last_fired: Mapping[str, datetime],
    ) -> ScheduleStatus:
        """The status of ``schedules`` at ``now``, given the last tick fired of each."""
        rows = []
        for name, schedule in sorted(schedules.items()):
            last = last_fired.get(name)
            rows.append(
                ScheduleRow(
                    name=name,
                    schedule=schedule.describe(),
                    tz=schedule.tz,
                    missed=schedule.missed,
                    last_tick=last,
                    next_tick=schedule.next_tick(max(now, last or now)),
                )
            )
        return cls(leader=leader, node=node, at=now, schedules=tuple(rows))

    def as_json(self) -> dict[str, Any]:
        """The message as JSON values (what ``amqp-worker schedules --json`` prints)."""
        return self.model_dump(mode="json")

    def encode(self) -> bytes:
        """The message body."""
        return json.dumps(self.as_json()).encode()

    @classmethod
    def decode(cls, body: bytes) -> ScheduleStatus:
        """Read a message body; ``ValueError`` if it is not a status message."""
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise ValueError(
                f"not a schedule status message: {exc.error_count()} error(s)"
            ) from None
