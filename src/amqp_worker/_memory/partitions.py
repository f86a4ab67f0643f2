"""Per-key order in memory: jobs with one ``partition_key`` (and queue) run one at a time.

Each key has a lock while any job of it runs or waits; asyncio's locks hand
over in the order they were asked for, which is the order the worker takes
jobs (by priority, then as enqueued), so a key's jobs run in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["PartitionLocks"]


class PartitionLocks:
    """A lock per (queue, partition key), forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, queue: str, key: str) -> AsyncIterator[None]:
        """Run the body alone among jobs of ``key`` on ``queue``; in the order of the calls."""
        name = (queue, key)
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
