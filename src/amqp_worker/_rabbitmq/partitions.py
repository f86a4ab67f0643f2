"""Per-key order on RabbitMQ: partition queues with a single active consumer each.

With ``partitions=N`` (every publisher and worker alike), each job queue has N
partition queues ``<name>.partition.<queue>.<i>`` (quorum, single active
consumer; :func:`~amqp_worker._rabbitmq.extra_topology.partition_queue_arguments`).

- A job with a ``partition_key`` is published straight to partition
  :func:`~amqp_worker._core.controls.partition_of` of its queue, through the
  default exchange, confirmed: jobs of one key are in one queue, in the order
  they were published.
- Every worker consumes every partition of its queues on one channel of its
  own with a prefetch of 1 per consumer. RabbitMQ makes one consumer per
  partition active: its jobs run one at a time, in order, fleet-wide.
- A worker that dies leaves its one unacked job at the head of the partition;
  RabbitMQ activates another consumer, which gets that job first (it is not
  quarantined: that would take it out of order). Quorum queues count
  deliveries: past ``max_deliveries`` a job that keeps killing workers is
  dead-lettered into the failed-jobs queue (reason ``delivery_limit``).
- A failed attempt is retried in place, after its backoff, by the worker
  holding it (:meth:`~amqp_worker._core.running.JobRunner._run`): the jobs
  behind it wait, as order requires.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aio_pika.abc import AbstractChannel

from amqp_worker._core.controls import partition_of
from amqp_worker._core.job import Job
from amqp_worker.errors import InvalidControl, PublishReturned

from .broker import Broker
from .consumer import Delivery, QueueConsumer
from .extra_topology import partition_queue, partition_queue_arguments
from .messages import job_message

__all__ = ["PartitionPublisher", "consume_partitions", "ensure_partitions"]


class PartitionPublisher:
    """Publishes jobs with a ``partition_key`` to their partition queue, confirmed."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._topology = broker.topology
        settings = broker.settings
        self._partitions = settings.partitions
        self._max_deliveries = settings.max_deliveries
        self._max_bytes = settings.max_message_bytes

    def queue_of(self, job: Job) -> str:
        """The partition queue ``job`` goes to; :class:`InvalidControl` without partitions."""
        assert job.partition_key is not None
        if self._partitions == 0:
            raise InvalidControl(
                f"job {job.id} has a partition_key, but this worker has partitions=0: set "
                "partitions (AMQP_WORKER_PARTITIONS) to the same number on every publisher "
                "and worker"
            )
        index = partition_of(job.partition_key, self._partitions)
        return partition_queue(self._topology, job.queue, index)

    async def publish(self, job: Job, headers: Mapping[str, Any] | None) -> None:
        name = self.queue_of(job)
        message = job_message(job, headers=headers, max_bytes=self._max_bytes)
        await ensure_partitions(self._broker, job.queue, self._max_deliveries)
        try:
            await self._broker.publish("", name, message)
        except PublishReturned:
            # Deleted since it was declared: declare again, publish once more.
            self._broker.declarations.forget_key(f"partitions:{job.queue}")
            await ensure_partitions(self._broker, job.queue, self._max_deliveries)
            await self._broker.publish("", name, message)


async def ensure_partitions(
    broker: Broker, queue: str, max_deliveries: int, channel: AbstractChannel | None = None
) -> list[str]:
    """Declare every partition queue of ``queue`` (once per process unless ``channel``)."""
    topology = broker.topology
    arguments = partition_queue_arguments(topology, queue, max_deliveries)
    names = [partition_queue(topology, queue, i) for i in range(broker.settings.partitions)]
    key = f"partitions:{queue}"
    await broker.declarations.declare_dead_lettering(key, queue, names, arguments, channel)
    return names


async def consume_partitions(
    broker: Broker,
    queues: tuple[str, ...],
    on_message: Callable[[str, Delivery], Awaitable[None]],
) -> tuple[AbstractChannel | None, list[QueueConsumer]]:
    """Consume every partition of ``queues`` on a channel of its own; (channel, consumers).

    Nothing (None, []) when ``partitions`` is 0. The worker cancels the
    consumers and closes the channel with its others.
    """
    settings = broker.settings
    if settings.partitions == 0:
        return None, []
    channel = await broker.channel()
    # Per consumer (RabbitMQ's default, global=False): one job in flight per partition.
    await channel.set_qos(prefetch_count=1)
    consumers: list[QueueConsumer] = []
    for queue in queues:
        names = await ensure_partitions(broker, queue, settings.max_deliveries, channel)
        for name in names:
            consumer = QueueConsumer(channel, name, functools.partial(on_message, queue))
            await consumer.start()
            consumers.append(consumer)
    return channel, consumers
