"""Publishing jobs: where each one goes, and declaring its route before it goes.

A job due now goes to the main exchange, routed by its queue name to the work
queue. A delayed job goes to the first delay exchange on its route through
the delay topology, and ends up in its queue's due queue (see
:mod:`amqp_worker._rabbitmq.topology`). Either way the queues it needs are declared
first (once per process), and the broker confirms every publish.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from amqp_worker._core.job import Job
from amqp_worker.errors import PublishError, PublishReturned

from .broker import Broker
from .messages import JobMessage, job_message
from .partitions import PartitionPublisher

__all__ = ["JobPublisher", "due_in", "now_ms"]


#: Publishes of one perform_many awaiting their confirms at once.
IN_FLIGHT = 256


def now_ms() -> float:
    """The wall clock, in ms since the Unix epoch: the clock of every due time."""
    return time.time() * 1000


def due_in(delay_s: float) -> int:
    """The due time, in ms since the epoch, of a job ``delay_s`` seconds from now (never early)."""
    return math.ceil(now_ms() + delay_s * 1000)


class JobPublisher:
    """Publishes jobs through one :class:`~amqp_worker._rabbitmq.broker.Broker`, confirmed."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._topology = broker.topology
        self._max_bytes = broker.settings.max_message_bytes
        self._partitions = PartitionPublisher(broker)

    async def publish(
        self, job: Job, headers: Mapping[str, Any] | None = None, due_ms: int | None = None
    ) -> None:
        """Publish ``job`` to run now, or at ``due_ms``; return once the broker confirmed.

        Raises a :class:`~amqp_worker.errors.BrokerError` if it was not confirmed.
        """
        if job.partition_key is not None and due_ms is None:
            await self._partitions.publish(job, headers)  # a delayed one is refused earlier
        elif due_ms is None:
            await self._publish_now(job, headers)
        else:
            await self._publish_delayed(job, due_ms, headers)

    async def publish_many(self, jobs: Sequence[tuple[Job, Mapping[str, Any]]]) -> None:
        """Publish jobs to run now with pipelined confirms.

        Raises a :class:`~amqp_worker.errors.PublishError` naming every job
        that was not confirmed; the others are enqueued. A batch that holds a
        job with a ``partition_key`` is published one job at a time, in order,
        and stops at the first that fails.
        """
        if any(job.partition_key is not None for job, _ in jobs):
            # One at a time, in order: each goes to its own partition queue.
            for job, headers in jobs:
                await self.publish(job, headers)
            return
        for queue in dict.fromkeys(job.queue for job, _ in jobs):
            await self._broker.declarations.ensure_work_queue(queue)
        exchange = self._topology.exchange
        # Built (and size-checked) before anything is published.
        publishes = [
            (exchange, job.queue, job_message(job, headers=h, max_bytes=self._max_bytes))
            for job, h in jobs
        ]
        results = await self._broker.publish_all(publishes, IN_FLIGHT)
        raise_first(results, [j.id for j, _ in jobs])

    async def _publish_now(self, job: Job, headers: Mapping[str, Any] | None) -> None:
        # The hot path of perform: no closures, one declaration check.
        await self._broker.declarations.ensure_work_queue(job.queue)
        message = job_message(job, headers=headers, max_bytes=self._max_bytes)
        try:
            await self._broker.publish(self._topology.exchange, job.queue, message)
        except PublishReturned:
            # Someone deleted the queue since we declared it: declare again, publish once more.
            self._broker.declarations.forget(job.queue)
            await self._broker.declarations.ensure_work_queue(job.queue)
            await self._broker.publish(self._topology.exchange, job.queue, message)

    async def _publish_delayed(
        self, job: Job, due_ms: int, headers: Mapping[str, Any] | None
    ) -> None:
        def build() -> tuple[str, JobMessage]:
            # Routed from the time left *now*: the first delayed publish declares the
            # whole delay topology, which can take longer than a short delay.
            route = self._topology.delay_route(due_ms - now_ms())
            extra = {**(headers or {}), **route.headers}
            message = job_message(job, headers=extra, due_ms=due_ms, max_bytes=self._max_bytes)
            return route.exchange, message

        await self._with_declared(
            job.queue, lambda: self._broker.declarations.ensure_due_queue(job.queue), build
        )

    async def _with_declared(
        self,
        queue: str,
        declare: Callable[[], Awaitable[None]],
        build: Callable[[], tuple[str, JobMessage]],
    ) -> None:
        """Declare what ``queue`` needs, then build and publish its message.

        The message is built after the declare, so anything time-based in it
        (the delay route) is computed from the moment it is published.
        """
        await declare()
        exchange, message = build()
        try:
            await self._broker.publish(exchange, queue, message)
        except PublishReturned:
            # Someone deleted the queue since we declared it: declare again, publish once more.
            self._broker.declarations.forget(queue)
            await declare()
            exchange, message = build()
            await self._broker.publish(exchange, queue, message)


def raise_first(results: list[BaseException | None], ids: list[str]) -> None:
    """Raise a :class:`PublishError` naming every job whose publish failed, if any did."""
    failed = [(job_id, r) for job_id, r in zip(ids, results, strict=True) if r is not None]
    if not failed:
        return
    first = failed[0][1]
    assert first is not None
    if not isinstance(first, Exception):
        raise first
    raise PublishError(
        f"{len(failed)} of {len(ids)} jobs were not confirmed; first error: {first}",
        tuple(job_id for job_id, _ in failed),
    ) from first
