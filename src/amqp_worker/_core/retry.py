"""Retry policy: whether a failed attempt is retried, and after how long. Pure, no I/O.

A job's ``attempt`` counts the tries before the current one, so a job with
``max_retries=3`` runs at most 4 times (attempts 0 to 3). The n-th retry
waits ``min(max_delay_s, base_s * factor ** (n - 1))``, scaled by a random
factor in ``[1 - jitter, 1 + jitter]`` so that jobs failing together do not
retry together. With the defaults that is about 1 s, 2 s, 4 s.

Never retried: invalid args, unknown handlers, :class:`PermanentError`,
exceptions in ``dont_retry_on``, and exceptions not in ``retry_on``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from amqp_worker.errors import (
    HandlerNotRegistered,
    InvalidArgs,
    InvalidResult,
    JobCancelled,
    JobExpired,
    PermanentError,
    Retry,
)

from .failures import FailureReason

__all__ = ["Decision", "RetryPolicy", "decide"]

#: Failures that no retry can fix.
NEVER_RETRIED: tuple[type[BaseException], ...] = (PermanentError, InvalidArgs, HandlerNotRegistered)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed attempts are retried; set per worker and override per handler."""

    max_retries: int = 3
    """Retries after the first attempt; 0 never retries."""
    base_s: float = 1.0
    """Delay before the first retry."""
    factor: float = 2.0
    """Each further retry waits this many times longer."""
    max_delay_s: float = 3600.0
    """Upper bound of one delay, before jitter."""
    jitter: float = 0.1
    """Spread of each delay, as a fraction (0.1 is +/-10%)."""
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    """Only these exceptions are retried."""
    dont_retry_on: tuple[type[BaseException], ...] = ()
    """These are never retried, even if ``retry_on`` matches."""

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise TypeError("max_retries must be an int")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for field in ("base_s", "max_delay_s"):
            value = getattr(self, field)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{field} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        for field in ("retry_on", "dont_retry_on"):
            types = getattr(self, field)
            if not isinstance(types, tuple) or not all(
                isinstance(t, type) and issubclass(t, BaseException) for t in types
            ):
                raise TypeError(f"{field} must be a tuple of exception classes")

    def delay_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``retry`` (1 for the first retry), jitter included."""
        exponent = min(retry - 1, 1000)  # factor ** huge overflows long before it matters
        try:
            raw = self.base_s * self.factor**exponent
        except OverflowError:
            raw = self.max_delay_s
        delay = min(self.max_delay_s, raw)
        if self.jitter:
            delay *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def retryable(self, exc: BaseException) -> bool:
        """True if ``exc`` may be retried at all, whatever the attempt."""
        if isinstance(exc, Retry):
            return True
        if isinstance(exc, NEVER_RETRIED + self.dont_retry_on):
            return False
        return isinstance(exc, self.retry_on)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a failed attempt."""

    retry: bool
    delay_s: float = 0.0
    reason: FailureReason = FailureReason.HANDLER_ERROR


def reason_for(exc: BaseException) -> FailureReason:
    """The failure reason a parked job gets for ``exc``."""
    if isinstance(exc, InvalidArgs):
        return FailureReason.INVALID_ARGS
    if isinstance(exc, HandlerNotRegistered):
        return FailureReason.UNKNOWN_HANDLER
    if isinstance(exc, InvalidResult):
        return FailureReason.INVALID_RESULT
    if isinstance(exc, JobExpired):
        return FailureReason.EXPIRED
    if isinstance(exc, JobCancelled):
        return FailureReason.CANCELLED
    return FailureReason.HANDLER_ERROR


def decide(
    policy: RetryPolicy, attempt: int, exc: BaseException, rng: random.Random | None = None
) -> Decision:
    """Retry (and when) or park, for a job on ``attempt`` that failed with ``exc``."""
    if attempt >= policy.max_retries or not policy.retryable(exc):
        return Decision(retry=False, reason=reason_for(exc))
    if isinstance(exc, Retry) and exc.delay_s is not None:
        return Decision(retry=True, delay_s=exc.delay_s)
    return Decision(retry=True, delay_s=policy.delay_s(attempt + 1, rng))
