"""Rate and concurrency limits of a handler: the options, their checks, and the token plan.

Pure, shared by every worker (docs/controls.md):

- ``rate="50/s"`` (or ``/min``, ``/h``) with ``burst``: at most ``burst``
  attempts start at once after a quiet spell, and at most ``rate`` per unit
  of time after that (a token bucket: in any window of ``T`` seconds, at most
  ``burst + rate * T`` attempts start);
- ``concurrency=N``: at most N attempts of the handler run at once;
- with ``limit_key`` (an args field, or a function of the job), both apply
  per key value instead: at most ``count`` starts per key in any window of
  one unit (a sliding window: ``"10/min"`` is 10 in any 60 s), and at most
  N attempts per key at once.

All hold across every worker of one ``name`` on RabbitMQ
(:mod:`amqp_worker._rabbitmq.limits`) and within one process in memory
(:class:`TokenBucket`, :mod:`amqp_worker._memory.limits`). They count
attempts: a retry takes a token and a slot again.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .job import Job

__all__ = [
    "KEY_LANES",
    "MIN_FEED_INTERVAL_S",
    "Limits",
    "SlidingWindow",
    "TokenBucket",
    "feed_interval_s",
    "parse_rate",
    "rate_parts",
    "snooze_s",
]

#: Lanes a handler's per-key concurrency limit spreads its keys over (by CRC-32 of the key).
KEY_LANES = 16

#: The shortest pause between two token writes of a fleet's token leader.
MIN_FEED_INTERVAL_S = 0.01

_UNITS_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


def rate_parts(rate: str) -> tuple[float, float]:
    """``(count, unit in seconds)`` of a rate such as ``"50/s"``, ``"10/min"`` or ``"100/h"``.

    Raises ``ValueError`` for anything else, and for a rate that is not above 0.
    """
    if not isinstance(rate, str):
        raise TypeError(f"rate must be a str such as '50/s', got {type(rate).__name__}")
    found = _RATE.match(rate.lower())
    if found is None or found.group(2) not in _UNITS_S:
        raise ValueError(f"rate must look like '50/s', '10/min' or '100/h', got {rate!r}")
    count = float(found.group(1))
    if not (count > 0 and math.isfinite(count)):
        raise ValueError(f"rate must be above 0, got {rate!r}")
    return count, _UNITS_S[found.group(2)]


def parse_rate(rate: str) -> float:
    """Attempts per second of a rate such as ``"50/s"`` (see :func:`rate_parts`)."""
    count, unit_s = rate_parts(rate)
    return count / unit_s


def _key_function(limit_key: object) -> Callable[[Job], str | None]:
    if isinstance(limit_key, str):
        if not limit_key:
            raise ValueError("limit_key must name an args field, got ''")

        def field(job: Job) -> str | None:
            value: Any = job.args.get(limit_key)
            return None if value is None else str(value)

        return field
    if callable(limit_key):
        return limit_key
    raise TypeError(
        f"limit_key must be an args field name or a function of the job, got {limit_key!r}"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """A handler's fleet-wide limits; build with :meth:`of`."""

    rate: str | None
    """The rate as given (``"50/s"``), or None for no rate limit."""
    rate_per_s: float | None
    burst: int
    """Tokens that can pile up while the handler is idle (the bucket's size)."""
    concurrency: int | None
    """Attempts that may run at once, fleet-wide (per key with a key); None for no limit."""
    key: Callable[[Job], str | None] | None = None
    """With a key, the limits hold per key value; None: per handler."""
    key_name: str | None = None
    """The args field the key is read from, or the key function's name (for views)."""

    @classmethod
    def of(
        cls,
        rate: str | None,
        burst: int | None,
        concurrency: int | None,
        limit_key: str | Callable[[Job], str | None] | None = None,
    ) -> Limits | None:
        """Check a handler's options; None when it sets neither limit.

        ``burst`` defaults to 1 (no bunching: starts are spread evenly) and
        needs ``rate``; a per-key rate takes no ``burst`` (its count per unit is
        the most that start at once) and needs a whole count. Raises
        ``TypeError``/``ValueError`` for a bad value.
        """
        if rate is None and concurrency is None:
            if burst is not None:
                raise ValueError("burst needs a rate")
            if limit_key is not None:
                raise ValueError("limit_key needs a rate or a concurrency")
            return None
        per_s = parse_rate(rate) if rate is not None else None
        key = key_name = None
        if limit_key is not None:
            key = _key_function(limit_key)
            key_name = limit_key if isinstance(limit_key, str) else _name_of(limit_key)
            if burst is not None:
                raise ValueError("burst does not apply to a per-key rate (its count is the burst)")
            if rate is not None and not rate_parts(rate)[0].is_integer():
                raise ValueError(f"a per-key rate needs a whole count, got {rate!r}")
        if burst is None:
            burst = 1
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int of at least 1, got {burst!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int of at least 1, got {concurrency!r}")
        return cls(rate, per_s, burst, concurrency, key, key_name)

    @property
    def token_burst(self) -> int | None:
        """The burst of a per-handler rate (its token bucket's size); None otherwise."""
        return self.burst if self.rate is not None and self.key is None else None

    def key_of(self, job: Job) -> str:
        """The key ``job`` is limited under; jobs without one share the key ``""``."""
        assert self.key is not None
        return self.key(job) or ""

    def window(self) -> tuple[int, float]:
        """A per-key rate as ``(starts, window in seconds)``."""
        assert self.rate is not None
        count, unit_s = rate_parts(self.rate)
        return int(count), unit_s

    def describe(self) -> str:
        """One line for logs and views: ``rate=50/s burst=1 concurrency=4``."""
        parts = []
        if self.rate is not None:
            parts.append(f"rate={self.rate}")
            if self.key is None:
                parts.append(f"burst={self.burst}")
        if self.concurrency is not None:
            parts.append(f"concurrency={self.concurrency}")
        if self.key_name is not None:
            parts.append(f"per {self.key_name}")
        return " ".join(parts)


def _name_of(function: object) -> str:
    return str(getattr(function, "__name__", None) or type(function).__name__)


def snooze_s(limits: Limits, snoozes: int) -> float:
    """How long a job over its key's rate waits before it asks again (before jitter).

    One start's share of the window, doubling with each snooze up to the
    whole window: a key with many jobs waiting does not churn the broker.
    """
    count, window_s = limits.window()
    return min(window_s, window_s / count * float(2 ** min(snoozes, 20)))


def feed_interval_s(rate_per_s: float) -> float:
    """How often a token leader writes tokens: one token's worth, but not under 10 ms."""
    return max(1.0 / rate_per_s, MIN_FEED_INTERVAL_S)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; :meth:`take` waits for one.

    Starts full, as a fleet's token queue does after a quiet spell. Waiters
    are served in order (an ``asyncio.Lock``).
    """

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now

    @property
    def available(self) -> int:
        """Whole tokens ready now."""
        self._refill()
        return int(self._tokens)

    async def take(self) -> None:
        """Wait until a token is there, and take it."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


class SlidingWindow:
    """At most ``count`` starts in any window of ``window_s``: :meth:`take` waits for room."""

    def __init__(
        self, count: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._count = count
        self._window_s = window_s
        self._clock = clock
        self._starts: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Wait until fewer than ``count`` starts fall in the last ``window_s``; record one."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self._window_s:
                    self._starts.popleft()
                if len(self._starts) < self._count:
                    self._starts.append(now)
                    return
                await asyncio.sleep(self._starts[0] + self._window_s - now)
