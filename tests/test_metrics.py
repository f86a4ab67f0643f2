"""Prometheus metrics from hooks, on both workers (the ``kit`` fixture runs each test twice)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from amqp_worker import Job, PermanentError, RetryPolicy, Worker
from amqp_worker.metrics import PrometheusMetrics
from tests.conftest import WorkerKit, start_two_stuck_copies
from tests.contract.test_failure_contract import Flaky, wait_parked

GUARD_S = 30.0


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.timeout(90)
async def test_counters_histogram_and_gauge_follow_the_jobs(kit: WorkerKit) -> None:
    worker = kit.make(retry=RetryPolicy(max_retries=1, base_s=0.05, jitter=0.0))
    assert isinstance(worker, Worker)
    registry = CollectorRegistry()
    assert PrometheusMetrics(registry).instrument(worker) is worker
    flaky = Flaky(failures=1)
    worker.register("flaky", flaky)
    running = asyncio.Event()
    release = asyncio.Event()

    async def slow(args: dict[str, Any]) -> None:
        running.set()
        await release.wait()

    def doomed(args: dict[str, Any]) -> None:
        raise PermanentError("no")

    worker.register("slow", slow)
    worker.register("doomed", doomed)
    q = kit.queue
    async with worker:
        await worker.perform(kit.job("slow"))
        await asyncio.wait_for(running.wait(), GUARD_S)
        assert value(registry, "amqp_worker_jobs_in_progress", queue=q, handler="slow") == 1
        release.set()
        await worker.perform(kit.job("flaky"))
        await asyncio.wait_for(flaky.succeeded.wait(), GUARD_S)
        await worker.perform(kit.job("doomed"))
        parked = 1
        if kit.kind == "amqp":  # SimpleWorker refuses unknown handlers at perform
            await worker.perform(Job(handler="nobody_has_this", queue=q))
            parked = 2
        await wait_parked(worker, parked)
        await asyncio.sleep(0.05)  # the parked hook runs right after the park is confirmed

    def v(name: str, handler: str, **labels: str) -> float:
        return value(registry, f"amqp_worker_{name}", queue=q, handler=handler, **labels)

    assert v("jobs_in_progress", "slow") == 0
    assert (v("jobs_started_total", "flaky"), v("jobs_succeeded_total", "flaky")) == (2, 1)
    assert (v("jobs_failed_total", "flaky"), v("jobs_retried_total", "flaky")) == (1, 1)
    assert v("job_duration_seconds_count", "flaky", outcome="failed") == 1
    assert v("job_duration_seconds_count", "flaky", outcome="succeeded") == 1
    assert v("jobs_in_progress", "flaky") == 0
    assert v("jobs_parked_total", "doomed", reason="handler_error") == 1
    assert v("jobs_failed_total", "doomed") == 1
    assert v("jobs_retried_total", "doomed") == 0
    # An unknown handler never started: parked, but never in progress or timed.
    assert v("jobs_parked_total", "nobody_has_this", reason="unknown_handler") == parked - 1
    assert v("jobs_started_total", "nobody_has_this") == 0
    assert v("jobs_in_progress", "nobody_has_this") == 0


def test_one_metrics_object_per_registry() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(registry)
    PrometheusMetrics(registry, namespace="other")  # another namespace is fine


@pytest.mark.timeout(60)
async def test_two_copies_of_one_job_and_attempts_cancelled_by_stop(kit: WorkerKit) -> None:
    worker = kit.make(max_concurrency=4)
    assert isinstance(worker, Worker)
    registry = CollectorRegistry()
    PrometheusMetrics(registry).instrument(worker)
    await start_two_stuck_copies(kit, worker)
    labels = {"queue": kit.queue, "handler": "stuck"}
    assert value(registry, "amqp_worker_jobs_in_progress", **labels) == 2
    await worker.stop(timeout_s=0.05)
    assert value(registry, "amqp_worker_jobs_in_progress", **labels) == 0
    assert value(registry, "amqp_worker_jobs_failed_total", **labels) == 2
