"""The pytest plugin of amqp-worker (entry point ``amqp_worker``): the ``time_travel_worker`` fixture.

With pytest-asyncio installed the fixture is async and gives a *started*
worker, stopped after the test; without it, a stopped one the test starts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import pytest

from .time_travel import TimeTravelWorker

__all__: list[str] = []

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture(name="time_travel_worker")
    async def _started_time_travel_worker() -> AsyncIterator[TimeTravelWorker]:
        """A fresh, started :class:`TimeTravelWorker` on a clock the test moves; stopped after."""
        worker = TimeTravelWorker()
        await worker.start()
        try:
            yield worker
        finally:
            await worker.stop()

else:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture(name="time_travel_worker")
    def _stopped_time_travel_worker() -> TimeTravelWorker:
        """A fresh, stopped :class:`TimeTravelWorker`: ``await worker.start()`` in the test."""
        return TimeTravelWorker()
