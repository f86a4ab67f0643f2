"""Prometheus metrics for a worker, built on its hooks. Needs ``amqp-worker[prometheus]``.

::

    from prometheus_client import start_http_server
    from amqp_worker.metrics import PrometheusMetrics

    PrometheusMetrics().instrument(worker)
    start_http_server(9100)

or ``amqp-worker run app:worker --metrics-port 9100``.

Every series is labelled by ``queue`` and ``handler``:

- ``amqp_worker_jobs_started_total``: attempts that began (args valid, handler known);
- ``amqp_worker_jobs_succeeded_total``;
- ``amqp_worker_jobs_failed_total``: failed attempts, whatever happens next
  (including attempts cancelled by ``stop()``, which RabbitMQ redelivers);
- ``amqp_worker_jobs_retried_total``: failed attempts that will run again;
- ``amqp_worker_jobs_parked_total``: jobs moved to a failed-jobs queue, also
  labelled by ``reason`` (``handler`` is empty for messages that were not a job);
- ``amqp_worker_job_duration_seconds``: a histogram of attempt durations,
  labelled by ``outcome`` (``succeeded`` or ``failed``);
- ``amqp_worker_jobs_in_progress``: attempts running now.

Schedules add two series, labelled by ``schedule``:

- ``amqp_worker_schedule_ticks_total``: ticks this worker fired (as the leader);
- ``amqp_worker_schedule_tick_lateness_seconds``: a histogram of how long after
  its tick each one was enqueued.

Handler names are labels, so their number should stay small: only registered
handlers reach ``started``, but an unknown handler name in a parked message
does appear under ``parked``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeVar

from ._core.hooks import JobEvent
from ._core.interfaces import Worker
from ._core.ticker import TickEvent

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "Prometheus metrics need the prometheus extra: pip install 'amqp-worker[prometheus]'"
    ) from exc

__all__ = ["DURATION_BUCKETS_S", "PrometheusMetrics"]

#: Any worker: the integration relies on the Worker protocol only.
W = TypeVar("W", bound=Worker)

#: Histogram buckets, in seconds: background jobs run from milliseconds to minutes.
DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)

#: Tick lateness: a healthy leader is milliseconds late; a takeover, seconds.
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0)

_LABELS = ("queue", "handler")


class PrometheusMetrics:
    """Job counters, a duration histogram and an in-progress gauge, fed by worker hooks.

    The metrics are registered in ``registry`` (prometheus_client's default
    registry if None) when this object is made, so make one per registry and
    instrument any number of workers with it.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, namespace: str = "amqp_worker"
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        common: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        self.started = Counter("jobs_started", "Job attempts that began.", _LABELS, **common)
        self.succeeded = Counter(
            "jobs_succeeded", "Job attempts that succeeded.", _LABELS, **common
        )
        self.failed = Counter(
            "jobs_failed", "Job attempts that failed (retried or not).", _LABELS, **common
        )
        self.retried = Counter(
            "jobs_retried", "Failed attempts that will be retried.", _LABELS, **common
        )
        self.parked = Counter(
            "jobs_parked",
            "Jobs moved to a failed-jobs queue.",
            (*_LABELS, "reason"),
            **common,
        )
        self.duration = Histogram(
            "job_duration_seconds",
            "Duration of job attempts.",
            (*_LABELS, "outcome"),
            buckets=DURATION_BUCKETS_S,
            **common,
        )
        # livesum: under `run --processes` (prometheus_client's multiprocess mode) the
        # supervisor sums the children that are alive; a dead child's count is dropped.
        self.in_progress = Gauge(
            "jobs_in_progress",
            "Job attempts running now.",
            _LABELS,
            multiprocess_mode="livesum",
            **common,
        )
        self.ticks = Counter(
            "schedule_ticks", "Schedule ticks this worker fired.", ("schedule",), **common
        )
        self.tick_lateness = Histogram(
            "schedule_tick_lateness_seconds",
            "How long after its tick each schedule tick was enqueued.",
            ("schedule",),
            buckets=LATENESS_BUCKETS_S,
            **common,
        )
        # Whether the attempt running in this task was counted in in_progress: a
        # failure before the start (unknown handler, invalid args) must not
        # decrement it. Per task, so two copies of one job running at once count twice.
        self._counted: ContextVar[bool] = ContextVar(
            f"amqp_worker_metrics_{id(self)}", default=False
        )

    def instrument(self, worker: W) -> W:
        """Add this object's hooks to ``worker``; return the worker."""
        worker.hooks.before(self._before)
        worker.hooks.after(self._after)
        worker.hooks.on_failure(self._on_failure)
        worker.hooks.on_parked(self._on_parked)
        worker.hooks.on_tick(self._on_tick)
        return worker

    def _on_tick(self, event: TickEvent) -> None:
        self.ticks.labels(event.schedule).inc()
        self.tick_lateness.labels(event.schedule).observe(event.lateness_s)

    def _labels(self, event: JobEvent) -> tuple[str, str]:
        return event.queue, event.handler or ""

    def _before(self, event: JobEvent) -> None:
        labels = self._labels(event)
        self.started.labels(*labels).inc()
        self.in_progress.labels(*labels).inc()
        self._counted.set(True)

    def _finished(self, event: JobEvent, outcome: str) -> None:
        labels = self._labels(event)
        if self._counted.get():
            self._counted.set(False)
            self.in_progress.labels(*labels).dec()
            self.duration.labels(*labels, outcome).observe(event.duration_s or 0.0)

    def _after(self, event: JobEvent) -> None:
        self.succeeded.labels(*self._labels(event)).inc()
        self._finished(event, "succeeded")

    def _on_failure(self, event: JobEvent) -> None:
        labels = self._labels(event)
        self.failed.labels(*labels).inc()
        if event.retry_in_s is not None:
            self.retried.labels(*labels).inc()
        self._finished(event, "failed")

    def _on_parked(self, event: JobEvent) -> None:
        reason = event.reason.value if event.reason is not None else "unknown"
        self.parked.labels(*self._labels(event), reason).inc()
