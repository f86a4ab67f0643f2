"""Template filters: how numbers and times read on the dashboard's pages. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "num", "when"]


def num(value: object) -> str:
    """``12,345`` for an int, ``—`` for a number that cannot be known."""
    return "—" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def when(value: datetime | None) -> str:
    """A moment in UTC to the second."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """``3 min ago`` or ``in 2 h``, relative to ``now`` (default: the current time)."""
    if value is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    # Each unit until 1.5 of the next: "75 min", then "2 h".
    for unit, size, up_to in (("s", 1, 90), ("min", 60, 5400), ("h", 3600, 129600)):
        if seconds < up_to:
            text = f"{seconds / size:.0f} {unit}"
            break
    else:
        text = f"{seconds / 86400:.0f} d"
    return f"in {text}" if ahead else f"{text} ago"
