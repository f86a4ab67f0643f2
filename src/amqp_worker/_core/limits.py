"""Rate and concurrency limits of a handler: the options, their checks, and the token plan.

Pure, shared by every worker (docs/controls.md):

- ``rate="50/s"`` (or ``/min``, ``/h``) with ``burst``: at most ``burst``
  attempts start at once after a quiet spell, and at most ``rate`` per unit
  of time after that (a token bucket: in any window of ``T`` seconds, at most
  ``burst + rate * T`` attempts start);
- ``concurrency=N``: at most N attempts of the handler run at once.

Both hold across every worker of one ``name`` on RabbitMQ
(:mod:`amqp_worker._rabbitmq.limits`) and within one process in memory
(:class:`TokenBucket`, :mod:`amqp_worker._memory.limits`). They count
attempts: a retry takes a token and a slot again.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MIN_FEED_INTERVAL_S", "Limits", "TokenBucket", "feed_interval_s", "parse_rate"]

#: The shortest pause between two token writes of a fleet's token leader.
MIN_FEED_INTERVAL_S = 0.01

_UNITS_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*$")


def parse_rate(rate: str) -> float:
    """Attempts per second of a rate such as ``"50/s"``, ``"10/min"`` or ``"100/h"``.

    Raises ``ValueError`` for anything else, and for a rate that is not above 0.
    """
    if not isinstance(rate, str):
        raise TypeError(f"rate must be a str such as '50/s', got {type(rate).__name__}")
    found = _RATE.match(rate.lower())
    if found is None or found.group(2) not in _UNITS_S:
        raise ValueError(f"rate must look like '50/s', '10/min' or '100/h', got {rate!r}")
    per_s = float(found.group(1)) / _UNITS_S[found.group(2)]
    if not (per_s > 0 and math.isfinite(per_s)):
        raise ValueError(f"rate must be above 0, got {rate!r}")
    return per_s


@dataclass(frozen=True, slots=True)
class Limits:
    """A handler's fleet-wide limits; build with :meth:`of`."""

    rate: str | None
    """The rate as given (``"50/s"``), or None for no rate limit."""
    rate_per_s: float | None
    burst: int
    """Tokens that can pile up while the handler is idle (the bucket's size)."""
    concurrency: int | None
    """Attempts that may run at once, fleet-wide; None for no limit."""

    @classmethod
    def of(cls, rate: str | None, burst: int | None, concurrency: int | None) -> Limits | None:
        """Check a handler's options; None when it sets neither limit.

        ``burst`` defaults to 1 (no bunching: starts are spread evenly) and
        needs ``rate``. Raises ``TypeError``/``ValueError`` for a bad value.
        """
        if rate is None and concurrency is None:
            if burst is not None:
                raise ValueError("burst needs a rate")
            return None
        per_s = parse_rate(rate) if rate is not None else None
        if burst is None:
            burst = 1
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an int of at least 1, got {burst!r}")
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an int of at least 1, got {concurrency!r}")
        return cls(rate, per_s, burst, concurrency)

    def describe(self) -> str:
        """One line for logs and views: ``rate=50/s burst=1 concurrency=4``."""
        parts = []
        if self.rate is not None:
            parts += [f"rate={self.rate}", f"burst={self.burst}"]
        if self.concurrency is not None:
            parts.append(f"concurrency={self.concurrency}")
        return " ".join(parts)


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
