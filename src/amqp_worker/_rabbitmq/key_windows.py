"""Per-key rates on RabbitMQ: a sliding window of start markers per key.

A handler registered with ``rate`` and ``limit_key`` gives each key value a
classic queue ``<name>.keyrate.<H>.<rate>.<hash of the key>`` that holds at
most ``count`` markers, each gone after the rate's window
(:func:`~amqp_worker._rabbitmq.extra_topology.key_window_arguments`). A job
may start if its worker's confirmed publish of a marker is accepted; a
refused one (``reject-publish``: ``count`` markers are live) means the key
is over its rate, and the job is snoozed: re-published through the delay
topology, its original due time kept for ``max_age_s``
(:meth:`~amqp_worker._rabbitmq.limits.RabbitLimits.admit`). In any window,
at most ``count`` markers, so at most ``count`` starts per key, fleet-wide.
"""

from __future__ import annotations

import time

from aio_pika import DeliveryMode, Message

from amqp_worker._core.limits import Limits
from amqp_worker.errors import PublishNacked, PublishReturned

from .broker import Broker
from .extra_topology import key_window_arguments, key_window_queue

__all__ = ["MARKER_TYPE", "KeyWindows"]

#: The AMQP ``type`` of a start marker.
MARKER_TYPE = "aw-key-start"
#: Declarations remembered at most; past it, the oldest half is forgotten (declared again).
MAX_REMEMBERED = 10_000


class KeyWindows:
    """Takes a start in a key's window with one confirmed publish."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._declared: dict[str, float] = {}

    async def try_start(self, handler: str, key: str, limits: Limits) -> bool:
        """True if ``key`` may start one more attempt of ``handler`` now (and it counts)."""
        count, window_s = limits.window()
        name = key_window_queue(self._broker.topology, handler, key, count, window_s)
        arguments = key_window_arguments(count, window_s)
        for _ in range(2):
            await self._declare(name, arguments)
            marker = Message(b"", type=MARKER_TYPE, delivery_mode=DeliveryMode.NOT_PERSISTENT)
            try:
                await self._broker.publish("", name, marker)
                return True
            except PublishNacked:
                return False  # `count` markers live: over the rate
            except PublishReturned:
                self._declared.pop(name, None)  # expired since: declare it again
        return False

    async def _declare(self, name: str, arguments: dict[str, int | str]) -> None:
        # Declared again at least every half of x-expires, so it never expires in use
        # (publishes do not count as use for x-expires).
        now = time.monotonic()
        last = self._declared.get(name)
        if last is not None and now - last < int(arguments["x-expires"]) / 2000:
            return
        if len(self._declared) >= MAX_REMEMBERED:
            oldest = sorted(self._declared, key=self._declared.__getitem__)
            for forgotten in oldest[: MAX_REMEMBERED // 2]:
                del self._declared[forgotten]
        await self._broker.declarations.declare_queue(name, dict(arguments))
        self._declared[name] = now
