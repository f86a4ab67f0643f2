"""The schedule token's body, pure: what it holds, its JSON, and how two views merge.

The token (see :mod:`amqp_worker._rabbitmq.schedule_leader`) is one JSON
message holding, per schedule, its newest definition and the last tick fired.
Merging views is commutative and idempotent, so any number of tokens and
proposals, in any order, end in the same state. No broker here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from amqp_worker._core.job import Job
from amqp_worker._core.schedule import Schedule
from amqp_worker.errors import InvalidSchedule

__all__ = [
    "TOKEN_TYPE",
    "ScheduleState",
    "merge_states",
    "parse_token",
    "schedule_from",
    "token_body",
]

#: The AMQP ``type`` of a token message; anything else on the token queue is dropped.
TOKEN_TYPE = "aw-schedule-token"


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the token keeps of one schedule."""

    definition: dict[str, Any]
    declared_at: datetime
    """When the replica that wrote this definition started: the newest one wins."""
    last_tick: datetime | None = None


def token_body(states: Mapping[str, ScheduleState]) -> bytes:
    """The JSON of a token."""
    return json.dumps(
        {
            "schedules": {
                name: {
                    "definition": state.definition,
                    "declared_at": state.declared_at.isoformat(),
                    "last_tick": state.last_tick.isoformat() if state.last_tick else None,
                }
                for name, state in sorted(states.items())
            }
        },
        sort_keys=True,
    ).encode()


def parse_token(body: bytes) -> dict[str, ScheduleState]:
    """The states a token holds; raise ``ValueError`` if it is not a token."""
    data = json.loads(body)
    schedules = data.get("schedules") if isinstance(data, dict) else None
    if not isinstance(schedules, dict):
        raise ValueError("not a schedule token")
    states: dict[str, ScheduleState] = {}
    for name, entry in schedules.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise ValueError("not a schedule token")
        definition = entry.get("definition")
        if not isinstance(definition, dict):
            raise ValueError(f"schedule {name!r} has no definition")
        last = entry.get("last_tick")
        states[name] = ScheduleState(
            definition,
            _aware(datetime.fromisoformat(entry["declared_at"])),
            _aware(datetime.fromisoformat(last)) if last else None,
        )
    return states


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("token times must carry an offset")
    return moment.astimezone(UTC)


def merge_states(
    mine: Mapping[str, ScheduleState], theirs: Mapping[str, ScheduleState]
) -> tuple[dict[str, ScheduleState], list[tuple[str, ScheduleState, ScheduleState]]]:
    """Merge two views: latest tick per schedule, newest definition per schedule.

    Returns the merge and the schedules whose definitions differ, as
    ``(name, older, newer)``. Merging is commutative and idempotent, so any
    number of tokens and proposals, in any order, end in the same state.
    """
    merged = dict(mine)
    conflicts: list[tuple[str, ScheduleState, ScheduleState]] = []
    for name, other in theirs.items():
        current = merged.get(name)
        if current is None:
            merged[name] = other
            continue
        older, newer = sorted((current, other), key=lambda s: (s.declared_at, _key(s)))
        if older.definition != newer.definition:
            conflicts.append((name, older, newer))
        ticks = [t for t in (current.last_tick, other.last_tick) if t is not None]
        merged[name] = ScheduleState(
            newer.definition, newer.declared_at, max(ticks) if ticks else None
        )
    return merged, conflicts


def _key(state: ScheduleState) -> str:
    # A total order for equal declared_at, so both sides of a merge pick the same one.
    return json.dumps(state.definition, sort_keys=True)


def schedule_from(name: str, state: ScheduleState) -> Schedule:
    """The :class:`Schedule` a token's definition describes; raise ``InvalidSchedule``."""
    definition = state.definition
    try:
        job = Job.model_validate(definition["job"])
        return Schedule.build(
            name,
            job,
            cron=definition.get("cron"),
            every=definition.get("every_s"),
            tz=definition.get("tz", "UTC"),
            missed=definition.get("missed", "once"),
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise InvalidSchedule(
            f"schedule {name!r}: unusable definition in the token: {exc}"
        ) from None
