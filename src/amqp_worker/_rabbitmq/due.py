"""The due-job hold: what a worker does with a delayed job that RabbitMQ released early.

The delay topology (:mod:`amqp_worker._rabbitmq.topology`) releases a delayed job into
its due queue up to one delay window *before* it is due. The consumer of the
due queue then decides, by the wall clock, with :func:`due_action`:

- **run** it now, once its due time has come (or it carries no usable one:
  :func:`due_ms_of` is the one reading of the due-time header);
- **hold** it unacked in memory, with a loop timer, until it is due, when it
  is due within two windows;
- **send it round** the delay topology again, when it is further off (a
  delay longer than one pass of the topology, or a clock far ahead).

:class:`DueHold` keeps the held jobs and their timers. Held jobs stay unacked
on their own channel, so if the worker dies RabbitMQ redelivers them, and
memory is bounded by that channel's prefetch (``delay_prefetch``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from .messages import DUE_HEADER

__all__ = ["DueAction", "DueHold", "due_action", "due_at_of", "due_ms_of"]

logger = logging.getLogger("amqp_worker")

T = TypeVar("T")

#: The latest due time honoured, in ms since the epoch: the last millisecond of 9999-12-31
#: (the last a datetime holds). Later ones run now.
MAX_DUE_MS = 253_402_300_799_999

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: At most one "holding too many delayed jobs" warning per this many seconds.
HOLD_WARNING_INTERVAL_S = 60.0


class DueAction(enum.Enum):
    """What to do with a job that arrived from a due queue."""

    RUN = "run"
    """It is due (or has no usable due time): run it now."""
    HOLD = "hold"
    """It is due soon: hold it until then."""
    SEND_ROUND = "send_round"
    """It is far from due: publish it through the delay topology again."""


@dataclass(frozen=True, slots=True)
class DueDecision:
    """A :class:`DueAction`, and for ``HOLD`` how long to wait, in ms."""

    action: DueAction
    wait_ms: float = 0.0


def due_ms_of(headers: Mapping[str, Any] | None) -> int | float | None:
    """The due time a message's headers give, in ms since the epoch; None if none usable.

    The header comes off the wire, so it may be anything: only a finite
    number (not a bool) in 0..:data:`MAX_DUE_MS` is a time this library
    could have written.
    """
    due_ms = (headers or {}).get(DUE_HEADER)
    if (
        isinstance(due_ms, bool)
        or not isinstance(due_ms, int | float)
        or not math.isfinite(due_ms)
        or not 0 <= due_ms <= MAX_DUE_MS
    ):
        return None
    return due_ms


def due_at_of(headers: Mapping[str, Any] | None) -> datetime | None:
    """The due time a message's headers give, as a UTC datetime; None if none usable."""
    due_ms = due_ms_of(headers)
    # timedelta keeps whole milliseconds exact; a float of seconds would not near year 9999.
    return None if due_ms is None else _EPOCH + timedelta(milliseconds=due_ms)


def due_action(due_ms: float | None, now_ms: float, window_ms: int) -> DueDecision:
    """Decide what to do with a job due at ``due_ms`` (ms since the epoch) at ``now_ms``.

    ``due_ms`` is what :func:`due_ms_of` read: None (no usable due time, from
    a hostile or broken publisher) runs the job now rather than lose it or
    send it round forever. A job is held only if it is due within
    ``2 * window_ms``: the topology releases jobs at most one window early, so
    anything later than that was released by a different clock or a longer
    path, and waiting for it in memory could take arbitrarily long.
    """
    if due_ms is None:
        return DueDecision(DueAction.RUN)
    remaining_ms = due_ms - now_ms
    if remaining_ms <= 0:
        return DueDecision(DueAction.RUN)
    if remaining_ms > 2 * window_ms:
        return DueDecision(DueAction.SEND_ROUND)
    return DueDecision(DueAction.HOLD, remaining_ms)


class DueHold(Generic[T]):
    """Held jobs (any ``T``, e.g. an incoming message), each with a loop timer.

    When a job's timer fires, ``on_due`` gets it back; the caller re-checks
    the wall clock (a timer may fire a hair early; a job never may run
    early). ``limit`` is how many a worker can hold at once (its
    ``delay_prefetch``): reaching it is logged as a WARNING at most once a
    minute, since later due jobs then start late.
    """

    def __init__(self, on_due: Callable[[T], None], *, limit: int, window_ms: int) -> None:
        self._on_due = on_due
        self._limit = limit
        self._window_ms = window_ms
        self._held: dict[int, tuple[asyncio.TimerHandle, T]] = {}
        self._warned_at = -math.inf

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, item: T, wait_ms: float) -> None:
        """Keep ``item`` until ``wait_ms`` from now, then hand it to ``on_due``."""
        key = id(item)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(wait_ms / 1000, self._release, key)
        self._held[key] = (timer, item)
        if len(self._held) >= self._limit:
            self._warn_full(loop.time())

    def release_all(self) -> list[T]:
        """Cancel every timer and return the held items (the caller hands them back)."""
        held, self._held = self._held, {}
        for timer, _ in held.values():
            timer.cancel()
        return [item for _, item in held.values()]

    def _release(self, key: int) -> None:
        entry = self._held.pop(key, None)
        if entry is not None:
            self._on_due(entry[1])

    def _warn_full(self, now: float) -> None:
        # At the limit, RabbitMQ stops delivering due jobs to this worker until some
        # run: with more jobs due within one window than that, they start late.
        if now - self._warned_at < HOLD_WARNING_INTERVAL_S:
            return
        self._warned_at = now
        logger.warning(
            "holding %d delayed jobs, the delay_prefetch limit: jobs due within "
            "delay_window_ms=%d may start late; raise delay_prefetch or run more workers",
            len(self._held),
            self._window_ms,
        )
