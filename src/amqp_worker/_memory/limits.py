"""Rate and concurrency limits in one process: a token bucket and a semaphore per handler.

SimpleWorker's side of ``rate``/``burst``/``concurrency`` (docs/controls.md),
with the same bounds as the fleet-wide ones on RabbitMQ. A limited job waits
here in memory, holding its handler slot: ``max_concurrency`` bounds how many.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from amqp_worker._core.handlers import HandlerSpec
from amqp_worker._core.limits import TokenBucket

__all__ = ["MemoryLimits"]


class MemoryLimits:
    """The buckets and semaphores of a worker's limited handlers, made on first use."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def hold(self, spec: HandlerSpec | None) -> AsyncIterator[None]:
        """Wait for ``spec``'s concurrency slot and rate token; hold the slot inside."""
        limits = spec.limits if spec is not None else None
        if spec is None or limits is None:
            yield
            return
        slot: asyncio.Semaphore | contextlib.nullcontext[None] = contextlib.nullcontext()
        if limits.concurrency is not None:
            slot = self._slots.setdefault(spec.name, asyncio.Semaphore(limits.concurrency))
        async with slot:
            if limits.rate_per_s is not None:
                bucket = self._buckets.get(spec.name)
                if bucket is None:
                    bucket = TokenBucket(limits.rate_per_s, limits.burst)
                    self._buckets[spec.name] = bucket
                await bucket.take()
            yield
