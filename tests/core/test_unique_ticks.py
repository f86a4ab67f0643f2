"""A schedule whose job has a unique key skips a tick while the key is live (never piles up)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from amqp_worker import Job
from amqp_worker.testing import TimeTravelWorker


async def test_a_tick_whose_unique_key_is_live_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = TimeTravelWorker()
    ran: list[Any] = []

    async def report(args: dict[str, Any]) -> None:
        ran.append(args)

    worker.register("report", report)
    template = Job(handler="report", args={"from": "schedule"}, unique_key="nightly")
    worker.schedule("nightly", template, every=60)
    # The key is held by a job due in an hour: the ticks before then find it live.
    await worker.perform_in(
        Job(handler="report", args={"from": "hand"}, unique_key="nightly"), 3600
    )
    async with worker:
        with caplog.at_level(logging.WARNING, logger="amqp_worker"):
            await worker.advance(150)
        assert ran == []
        skipped = [r for r in caplog.records if "skipped its tick" in r.getMessage()]
        assert len(skipped) >= 2  # every 60 s from minute boundaries: 2 or 3 in 150 s
        await worker.advance(3600)  # the held job runs and frees the key; ticks go in again
        assert {"from": "hand"} in ran
        assert {"from": "schedule"} in ran
