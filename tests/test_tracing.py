"""OpenTelemetry trace context from perform, through delays and retries, to the handler span.

Runs on both workers (the ``kit`` fixture); on RabbitMQ the context crosses
the delay topology's dead-letter hops and a retry's re-publish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from amqp_worker import Job, RetryPolicy, Worker
from amqp_worker.tracing import Tracing
from tests.conftest import WorkerKit, start_two_stuck_copies

GUARD_S = 30.0


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def named(found: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in found if span.name == name]


@pytest.mark.timeout(90)
async def test_one_trace_from_perform_through_a_delay_and_a_retry_to_the_handler(
    kit: WorkerKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    worker = kit.make(retry=RetryPolicy(max_retries=1, base_s=0.05, jitter=0.0))
    assert isinstance(worker, Worker)
    Tracing(provider).instrument(worker)
    tracer = provider.get_tracer("test")
    done = asyncio.Event()
    attempts: list[int] = []

    async def flaky(args: dict[str, Any], job: Job) -> None:
        attempts.append(job.attempt)
        with tracer.start_as_current_span("inside the handler"):
            pass
        if job.attempt == 0:
            raise RuntimeError("first attempt fails")
        done.set()

    def sync(args: dict[str, Any]) -> None:
        with tracer.start_as_current_span("inside a sync handler"):
            pass

    worker.register("flaky", flaky)
    worker.register("sync", sync)
    async with worker:
        with tracer.start_as_current_span("request") as request:
            await worker.perform_in(kit.job("flaky"), 0.2)
            await worker.perform(kit.job("sync"))
        await asyncio.wait_for(done.wait(), GUARD_S)
        deadline = asyncio.get_running_loop().time() + GUARD_S
        while not named(exporter.get_finished_spans(), "inside a sync handler"):
            assert asyncio.get_running_loop().time() < deadline, "the sync handler never ran"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the after hook ends the span just after the handler
    found = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in found if span.name != "request"} == {trace_id}

    publish = named(found, f"{kit.queue} publish")
    assert len(publish) == 2
    assert all(span.kind is SpanKind.PRODUCER for span in publish)
    assert all(
        span.parent and span.parent.span_id == request.get_span_context().span_id
        for span in publish
    )

    process = sorted(named(found, "flaky process"), key=lambda span: span.start_time or 0)
    assert [span.attributes and span.attributes["amqp_worker.attempt"] for span in process] == [
        0,
        1,
    ]
    flaky_publish = next(
        s for s in publish if s.attributes and s.attributes["amqp_worker.handler"] == "flaky"
    )
    for span in process:
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is not None
        assert span.parent.span_id == flaky_publish.context.span_id
    failed, succeeded = process
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)
    assert succeeded.status.status_code is StatusCode.OK
    inner = named(found, "inside the handler")
    assert sorted(span.parent.span_id for span in inner if span.parent) == sorted(
        span.context.span_id for span in process
    )
    (sync_process,) = named(found, "sync process")
    (sync_inner,) = named(found, "inside a sync handler")
    assert sync_inner.parent is not None
    assert sync_inner.parent.span_id == sync_process.context.span_id
    assert attempts == [0, 1]


async def test_a_job_without_trace_headers_starts_a_new_trace(
    kit: WorkerKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    worker = kit.make()
    assert isinstance(worker, Worker)
    done = asyncio.Event()

    async def h(args: dict[str, Any]) -> None:
        done.set()

    worker.register("h", h)
    await worker.perform(kit.job("h"))  # published before tracing was added
    Tracing(provider).instrument(worker)
    async with worker:
        await asyncio.wait_for(done.wait(), GUARD_S)
        await asyncio.sleep(0.05)
    (span,) = exporter.get_finished_spans()
    assert span.name == "h process"
    assert span.parent is None


@pytest.mark.timeout(60)
async def test_every_attempt_span_ends_even_when_stop_cancels_it(
    kit: WorkerKit, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    worker = kit.make(max_concurrency=4)
    assert isinstance(worker, Worker)
    Tracing(provider).instrument(worker)
    await start_two_stuck_copies(kit, worker)
    await worker.stop(timeout_s=0.05)
    process = named(exporter.get_finished_spans(), "stuck process")
    assert len(process) == 2
    for span in process:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["amqp_worker.cancelled"] is True
