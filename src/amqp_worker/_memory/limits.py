"""Rate and concurrency limits in one process: buckets, windows and semaphores.

SimpleWorker's side of ``rate``/``burst``/``concurrency``/``limit_key``
(docs/controls.md), with the same bounds as the fleet-wide ones on RabbitMQ:
a token bucket per handler, or a sliding window per key; a semaphore per
handler, or per key. A limited job waits here in memory, holding its handler
slot: ``max_concurrency`` bounds how many.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from amqp_worker._core.handlers import HandlerSpec
from amqp_worker._core.job import Job
from amqp_worker._core.limits import SlidingWindow, TokenBucket

__all__ = ["MemoryLimits"]


class MemoryLimits:
    """The buckets, windows and semaphores of a worker's limited handlers, made on first use.

    Keyed by ``(handler, key)``; ``key`` is None for a per-handler limit.
    """

    def __init__(self) -> None:
        self._rates: dict[tuple[str, str | None], TokenBucket | SlidingWindow] = {}
        self._slots: dict[tuple[str, str | None], asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def hold(self, spec: HandlerSpec | None, job: Job) -> AsyncIterator[None]:
        """Wait for ``job``'s concurrency slot and rate allowance; hold the slot inside."""
        limits = spec.limits if spec is not None else None
        if spec is None or limits is None:
            yield
            return
        at = (spec.name, limits.key_of(job) if limits.key is not None else None)
        slot: asyncio.Semaphore | contextlib.nullcontext[None] = contextlib.nullcontext()
        if limits.concurrency is not None:
            slot = self._slots.setdefault(at, asyncio.Semaphore(limits.concurrency))
        async with slot:
            if limits.rate_per_s is not None:
                rate = self._rates.get(at)
                if rate is None:
                    if limits.key is not None:
                        rate = SlidingWindow(*limits.window())
                    else:
                        rate = TokenBucket(limits.rate_per_s, limits.burst)
                    self._rates[at] = rate
                await rate.take()
            yield
