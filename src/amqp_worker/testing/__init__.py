"""Testing helpers shipped with amqp-worker: a worker on a clock the test moves, and clean-up.

``TimeTravelWorker`` is a :class:`~amqp_worker.SimpleWorker` (same contract,
checked by the same suite as ``AMQPWorker``) with ``advance(timedelta)`` and
``drain()``. The pytest plugin (registered as ``amqp_worker``) gives each
test a fresh one as the ``time_travel_worker`` fixture. :func:`delete_topology`
removes what an ``AMQPWorker`` declared on a test broker. See docs/testing.md.
"""

from __future__ import annotations

from .teardown import delete_topology
from .time_travel import JobsFailed, TimeTravelWorker

__all__ = ["JobsFailed", "TimeTravelWorker", "delete_topology"]
