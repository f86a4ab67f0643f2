"""The in-memory results store: expiry, the bound, waiters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from amqp_worker import Job, JobResult, ResultTimeout
from amqp_worker._memory import workflows
from amqp_worker._memory.workflows import MemoryResults

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def record(job_id: str, value: int = 1) -> JobResult:
    return JobResult.succeeded(Job(handler="h", id=job_id), "q", value, NOW)


async def test_a_waiter_is_woken_by_the_result() -> None:
    results = MemoryResults(ttl_s=60)
    waiting = asyncio.ensure_future(results.wait_result("a", 10, None))
    await asyncio.sleep(0)
    results.store(record("a", 5))
    assert (await waiting).value == 5
    assert not results._waiters  # nothing left behind


async def test_no_result_in_time_is_a_result_timeout() -> None:
    with pytest.raises(ResultTimeout, match="no result of job b"):
        await MemoryResults(ttl_s=60).wait_result("b", 0.01, None)


def test_results_expire_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(workflows.time, "monotonic", lambda: clock[0])
    results = MemoryResults(ttl_s=10)
    results.store(record("a"))
    assert results.get("a") is not None
    clock[0] += 11
    assert results.get("a") is None
    results.store(record("b"))  # storing sweeps what expired
    assert len(results) == 1


def test_at_most_max_results_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows, "MAX_RESULTS", 3)
    results = MemoryResults(ttl_s=60)
    for name in "abcde":
        results.store(record(name))
    assert len(results) == 3
    assert results.get("a") is None
    assert results.get("e") is not None
