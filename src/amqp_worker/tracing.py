"""OpenTelemetry tracing for a worker, built on its hooks. Needs ``amqp-worker[otel]``.

::

    from amqp_worker.tracing import Tracing

    Tracing().instrument(worker)  # on publishers and on consumers

Each ``perform*`` makes a short ``PRODUCER`` span, ``"<queue> publish"``, a
child of whatever span is current, and writes its context into the job
message's headers (W3C ``traceparent``/``tracestate`` with the default
propagator). The headers travel with the job through delay hops, retries and
the failed-jobs queue. Each attempt then runs inside a ``CONSUMER`` span,
``"<handler> process"``, whose parent is the producer span, so a job's
publish and every attempt share one trace. Spans the handler makes (async or
sync, in its thread) are children of the attempt's span. A failed attempt's
span records the exception and has an error status.

A publisher in another language can join the trace by sending a
``traceparent`` header itself.

The producer span ends when the job is handed to the broker client, before
the broker's confirm: it marks the enqueue, not its latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from . import __version__
from ._core.hooks import JobEvent
from ._core.interfaces import Worker
from ._core.job import Job

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter, TextMapPropagator
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("tracing needs the otel extra: pip install 'amqp-worker[otel]'") from exc

__all__ = ["Tracing"]

#: Any worker: the integration relies on the Worker protocol only.
W = TypeVar("W", bound=Worker)


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads AMQP headers, whose string values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class Tracing:
    """Producer and consumer spans for jobs, linked through message headers.

    ``tracer_provider`` defaults to the global one OpenTelemetry's SDK sets up;
    ``propagator`` to the global propagator (W3C trace context and baggage).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("amqp_worker", __version__, tracer_provider)
        self.propagator = propagator
        # The running attempt's span and context token, from `before` to its end. The
        # hooks of one attempt run in the task that runs it, so a context variable
        # tells attempts apart even when two copies of one job run at once.
        self._attempt: ContextVar[tuple[trace.Span, Token[otel_context.Context]] | None] = (
            ContextVar(f"amqp_worker_tracing_{id(self)}", default=None)
        )

    def instrument(self, worker: W) -> W:
        """Add this object's hooks to ``worker``; return the worker."""
        worker.hooks.on_publish(self._on_publish)
        worker.hooks.before(self._before)
        worker.hooks.after(self._after)
        worker.hooks.on_failure(self._on_failure)
        return worker

    def _inject(self, headers: dict[str, Any]) -> None:
        if self.propagator is not None:
            self.propagator.inject(headers)
        else:
            propagate.inject(headers)

    def _extract(self, headers: Mapping[str, Any]) -> otel_context.Context:
        if self.propagator is not None:
            return self.propagator.extract(headers, getter=_GETTER)
        return propagate.extract(headers, getter=_GETTER)

    def _on_publish(self, job: Job, headers: dict[str, Any]) -> None:
        with self.tracer.start_as_current_span(
            f"{job.queue} publish",
            kind=SpanKind.PRODUCER,
            attributes=_attributes(job.queue, job.id, job.handler, job.attempt),
        ):
            self._inject(headers)

    def _before(self, event: JobEvent) -> None:
        parent = self._extract(event.headers)
        span = self.tracer.start_span(
            f"{event.handler} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes(event.queue, event.job_id, event.handler, event.attempt),
        )
        # Hooks run in the task that runs the handler, so attaching here makes
        # the handler's own spans children of this one (threads get a copy).
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._attempt.set((span, token))

    def _end(self, event: JobEvent) -> trace.Span | None:
        found = self._attempt.get()
        if found is None:
            return None  # failed before it started (unknown handler, invalid args)
        self._attempt.set(None)
        span, token = found
        otel_context.detach(token)
        return span

    def _after(self, event: JobEvent) -> None:
        span = self._end(event)
        if span is not None:
            span.set_status(Status(StatusCode.OK))
            span.end()

    def _on_failure(self, event: JobEvent) -> None:
        span = self._end(event)
        if span is None:
            return
        if event.error is not None:
            span.record_exception(event.error)
            span.set_status(
                Status(StatusCode.ERROR, f"{type(event.error).__name__}: {event.error}")
            )
        if event.retry_in_s is not None:
            span.set_attribute("amqp_worker.retry_in_s", event.retry_in_s)
        if isinstance(event.error, asyncio.CancelledError):
            span.set_attribute("amqp_worker.cancelled", True)
        span.end()


def _attributes(queue: str, job_id: str, handler: str | None, attempt: int) -> dict[str, Any]:
    """Messaging semantic-convention attributes, plus the job's handler and attempt."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": queue,
        "messaging.message.id": job_id,
        "amqp_worker.handler": handler or "",
        "amqp_worker.attempt": attempt,
    }
