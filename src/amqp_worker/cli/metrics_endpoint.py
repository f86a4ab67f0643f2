"""The ``/metrics`` endpoint of ``amqp-worker run``: one process's, or a supervisor's children's.

- One process (:func:`serve_metrics`): the worker is instrumented and
  prometheus_client's default registry is served, with the process and
  Python collectors.
- ``run --processes`` (:func:`serve_fleet_metrics`): children write their
  metrics to files in a directory of the supervisor's (prometheus_client's
  multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``); the supervisor serves
  their sum, plus its own ``amqp_worker_child_restarts_total``. The directory
  is made fresh for one run and deleted at its end.

prometheus_client serves from a thread of its own, shut down when the block ends.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .common import CLIError, ExitCode
from .loading import AnyWorker

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["FleetMetrics", "serve_fleet_metrics", "serve_metrics"]

logger = logging.getLogger("amqp_worker.cli")

_NEEDS_EXTRA = "--metrics-port needs the prometheus extra: pip install 'amqp-worker[prometheus]'"


@contextlib.contextmanager
def _endpoint(host: str, port: int, registry: CollectorRegistry, what: str) -> Iterator[None]:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise CLIError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", ExitCode.CONFIG
        ) from None
    logger.info(
        "serving Prometheus metrics%s on http://%s:%d/metrics", what, host, server.server_port
    )
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def serve_metrics(worker: AnyWorker, host: str, port: int) -> Iterator[None]:
    """Instrument ``worker`` and serve prometheus_client's default registry on ``host:port``."""
    try:
        from prometheus_client import REGISTRY

        from amqp_worker.metrics import PrometheusMetrics
    except ImportError:
        raise CLIError(_NEEDS_EXTRA, ExitCode.CONFIG) from None
    try:
        PrometheusMetrics().instrument(worker)
    except ValueError as exc:  # prometheus_client: "Duplicated timeseries in CollectorRegistry"
        raise CLIError(
            f"--metrics-port: the amqp_worker metrics are already registered ({exc}); "
            "the worker's module instruments itself, so serve its metrics there and "
            "drop --metrics-port",
            ExitCode.CONFIG,
        ) from None
    with _endpoint(host, port, REGISTRY, ""):
        yield


class FleetMetrics:
    """What the supervisor tells the metrics: where children write, restarts, exits."""

    def __init__(self, directory: str, restarts: Any) -> None:
        self.directory = directory
        """Each child's ``PROMETHEUS_MULTIPROC_DIR``."""
        self._restarts = restarts

    def restarted(self, reason: str) -> None:
        """A child was started again: after it ``died``, or at ``max_jobs``/``max_memory``."""
        self._restarts.labels(reason).inc()

    def exited(self, pid: int) -> None:
        """Drop the live gauges of the child ``pid`` (its counters stay in the sums)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def serve_fleet_metrics(host: str, port: int) -> Iterator[FleetMetrics]:
    """Serve the children's summed metrics on ``host:port`` until the block ends."""
    try:
        from prometheus_client import CollectorRegistry, Counter
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError:
        raise CLIError(_NEEDS_EXTRA, ExitCode.CONFIG) from None
    directory = tempfile.mkdtemp(prefix="amqp-worker-metrics-")
    try:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        restarts = Counter(
            "amqp_worker_child_restarts",
            "Child processes started again: after dying, or replaced at a limit.",
            ("reason",),
            registry=registry,
        )
        with _endpoint(host, port, registry, " of every child"):
            yield FleetMetrics(directory, restarts)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
