"""``perform_in``'s and ``perform_at``'s arguments as seconds to wait, checked at the edge."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

__all__ = ["delay_until", "seconds"]


def seconds(delay: timedelta | float) -> float:
    """Convert a ``perform_in`` delay to seconds; raise on negative or non-finite input."""
    if isinstance(delay, timedelta):
        value = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        value = float(delay)
    else:
        raise TypeError(f"delay must be a timedelta or a number of seconds, got {delay!r}")
    if not math.isfinite(value):
        raise ValueError(f"delay must be finite, got {delay!r}")
    if value < 0:
        raise ValueError(f"delay must not be negative, got {delay!r}")
    return value


def delay_until(when: datetime, now: datetime | None = None) -> float:
    """Seconds from ``now`` until ``when`` (0 if past); a naive ``when`` raises ``ValueError``."""
    if not isinstance(when, datetime):
        raise TypeError(f"when must be a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            "when must be timezone-aware; a naive datetime is ambiguous "
            "(use datetime.now(UTC) + timedelta(...))"
        )
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
