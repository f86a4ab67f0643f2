"""Periodic jobs: a schedule's definition and its ticks, as pure functions of time.

A :class:`Schedule` is a name, a template :class:`~amqp_worker.Job`, and
either a cron expression in an IANA time zone or a fixed interval. Nothing
here reads the clock: every function takes the times it works on, so the
DST cases are tested without sleeping.

- **cron** (five fields, names such as ``mon-fri``) is evaluated by
  `cronsim <https://pypi.org/project/cronsim/>`_, which reproduces Debian
  cron: a local time that does not exist (spring forward) fires once at the
  next valid instant; one that occurs twice (fall back) fires once, at the
  first. Expressions that run more often than hourly run on real time (a
  ``*/30`` fires in both halves of a repeated hour). cronsim was chosen over
  croniter for exactly that: it is small, typed, and states its DST rules
  (croniter's have a long bug history).
- **every** ticks at whole multiples of the interval since the Unix epoch
  (UTC), so every replica computes the same ticks whenever it started.

Each tick is a UTC instant; the job it enqueues has a deterministic id,
``<schedule>@<tick, ISO 8601 UTC, ms>``, and carries the tick as
``scheduled_at``. Any duplicate of a tick therefore has the same id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from amqp_worker.errors import InvalidSchedule

from .job import Job, validate_name

__all__ = ["MAX_CATCH_UP", "MissedPolicy", "Schedule", "tick_id"]

MissedPolicy = Literal["skip", "once", "all"]
#: ``missed="all"`` replays at most this many missed ticks of one schedule (the latest ones).
MAX_CATCH_UP = 1000
#: The shortest interval of ``every=``.
MIN_EVERY_S = 1.0
#: The most ticks one call looks at while due, so a clock jump cannot spin.
MAX_DUE = 1000


def tick_id(name: str, tick: datetime) -> str:
    """The id of the job a schedule enqueues for ``tick``: the same on every replica."""
    return f"{name}@{_iso(tick)}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(every: timedelta | float) -> float:
    if isinstance(every, timedelta):
        return every.total_seconds()
    if isinstance(every, int | float) and not isinstance(every, bool):
        return float(every)
    raise InvalidSchedule(f"every must be a timedelta or a number of seconds, got {every!r}")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic job: ``job`` enqueued on each tick of ``cron`` (in ``tz``) or ``every_s``."""

    name: str
    job: Job
    cron: str | None
    every_s: float | None
    tz: str
    missed: MissedPolicy

    @classmethod
    def build(
        cls,
        name: str,
        job: Job,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        missed: MissedPolicy = "once",
    ) -> Schedule:
        """Check everything at once; raise :class:`~amqp_worker.errors.InvalidSchedule` otherwise."""
        if not isinstance(name, str):
            raise InvalidSchedule(f"a schedule name must be a str, got {type(name).__name__}")
        try:
            validate_name(name)
        except ValueError as exc:
            raise InvalidSchedule(f"schedule name {name!r} {exc}") from None
        if "@" in name:
            raise InvalidSchedule(f"schedule name {name!r} must not contain '@' (job ids use it)")
        if not isinstance(job, Job):
            raise InvalidSchedule(f"schedule {name!r} needs a Job, got {type(job).__name__}")
        if (cron is None) == (every is None):
            raise InvalidSchedule(f"schedule {name!r} needs exactly one of cron= and every=")
        if missed not in get_args(MissedPolicy):
            raise InvalidSchedule(
                f"schedule {name!r}: missed must be 'skip', 'once' or 'all', got {missed!r}"
            )
        zone = _zone(name, tz)
        every_s: float | None = None
        if every is not None:
            every_s = _seconds(every)
            if not math.isfinite(every_s) or every_s < MIN_EVERY_S:
                raise InvalidSchedule(
                    f"schedule {name!r}: every must be at least {MIN_EVERY_S:g}s, got {every!r}"
                )
        if cron is not None:
            if not isinstance(cron, str):
                raise InvalidSchedule(f"schedule {name!r}: cron must be a str, got {cron!r}")
            if len(cron.split()) != 5:
                raise InvalidSchedule(
                    f"schedule {name!r}: cron {cron!r} must have five fields "
                    "(minute hour day-of-month month day-of-week)"
                )
            try:
                CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))
            except CronSimError as exc:
                raise InvalidSchedule(f"schedule {name!r}: cron {cron!r}: {exc}") from None
        return cls(name, job, cron, every_s, tz, missed)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def describe(self) -> str:
        """``cron 0 2 * * * Europe/Berlin`` or ``every 30s``, for logs and the CLI."""
        if self.cron is not None:
            return f"cron {self.cron} {self.tz}"
        return f"every {self.every_s:g}s"

    def definition(self) -> dict[str, Any]:
        """What replicas compare (JSON): timing, zone, missed policy and the template job."""
        return {
            "cron": self.cron,
            "every_s": self.every_s,
            "tz": self.tz,
            "missed": self.missed,
            "job": self.job.model_dump(mode="json", exclude={"id", "enqueued_at"}),
        }

    # -- ticks --------------------------------------------------------------------

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after`` (an aware datetime), in UTC."""
        if self.every_s is not None:
            every_ms = round(self.every_s * 1000)
            k = _ms(after) // every_ms + 1
            return _from_ms(k * every_ms)
        assert self.cron is not None
        local = after.astimezone(self.zone)
        return next(iter(CronSim(self.cron, local))).astimezone(UTC)

    def last_tick(self, until: datetime) -> datetime:
        """The latest tick at or before ``until``, in UTC."""
        if self.every_s is not None:
            every_ms = round(self.every_s * 1000)
            return _from_ms(_ms(until) // every_ms * every_ms)
        assert self.cron is not None
        # cronsim walks back from the minute after; a tick exactly at ``until`` counts.
        local = (until + timedelta(minutes=1)).astimezone(self.zone)
        for tick in CronSim(self.cron, local, reverse=True):
            if tick.astimezone(UTC) <= until:
                return tick.astimezone(UTC)
        raise AssertionError("unreachable: a cron expression always has an earlier tick")

    def ticks(self, after: datetime, until: datetime, limit: int = MAX_DUE) -> list[datetime]:
        """Ticks in (``after``, ``until``], oldest first; the latest ``limit`` if there are more."""
        found: list[datetime] = []
        tick = self.last_tick(until)
        while tick > after and len(found) < limit:
            found.append(tick)
            tick = self.last_tick(tick - timedelta(microseconds=1))
        found.reverse()
        return found

    def due(
        self, last_fired: datetime | None, led_since: datetime, now: datetime
    ) -> list[datetime]:
        """The ticks to fire at ``now``, oldest first.

        ``last_fired`` is the last tick any replica fired (None: never);
        ``led_since`` is when this replica began to lead. Ticks after that are
        due as they come. Ticks before it, after ``last_fired``, fell due while
        no replica led: ``missed`` decides (``skip`` none, ``once`` the latest,
        ``all`` each, at most :data:`MAX_CATCH_UP`). A schedule never fired
        starts at ``led_since``: nothing before it is replayed.
        """
        start = last_fired if last_fired is not None else led_since
        missed: list[datetime] = []
        gap_end = min(led_since, now)
        if start < gap_end and self.missed != "skip":
            limit = 1 if self.missed == "once" else MAX_CATCH_UP
            missed = self.ticks(start, gap_end, limit)
        return missed + self.ticks(max(start, led_since), now)

    def tick_job(self, tick: datetime) -> Job:
        """The job enqueued for ``tick``: the template with the tick's id and ``scheduled_at``."""
        return self.job.model_copy(update={"id": tick_id(self.name, tick), "scheduled_at": tick})


def _zone(name: str, tz: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise InvalidSchedule(f"schedule {name!r}: tz must be an IANA zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"schedule {name!r}: unknown time zone {tz!r} ({exc})") from None


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware")
    return math.floor(moment.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
