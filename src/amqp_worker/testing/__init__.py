"""Testing helpers shipped with amqp-worker: a worker on a clock the test moves.

``TimeTravelWorker`` is a :class:`~amqp_worker.SimpleWorker` (same contract,
checked by the same suite as ``AMQPWorker``) with ``advance(timedelta)`` and
``drain()``. The pytest plugin (registered as ``amqp_worker``) gives each
test a fresh one as the ``time_travel_worker`` fixture. See docs/testing.md.
"""

from __future__ import annotations

from .time_travel import JobsFailed, TimeTravelWorker

__all__ = ["JobsFailed", "TimeTravelWorker"]
