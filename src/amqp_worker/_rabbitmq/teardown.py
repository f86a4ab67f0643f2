"""Deleting what a worker name declared on RabbitMQ: for test suites, never for production.

Everything goes, messages included: each job queue's work, due, failed-jobs,
quarantine, partition and limit queues (and, for limited handlers, their
token queues; per-key rate windows expire on their own), the delay queues,
the schedule queues, the results and cancellations streams and the exchanges
(group queues are named by group: a finished group deletes its own). A
queue or exchange that does not exist is skipped. Shared parts (the delay
topology, the exchanges) are deleted too, so run it only when no other
worker of the same ``name`` uses the vhost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from amqp_worker._core.limits import Limits

from .connect import dial
from .extra_topology import limited_queues, partition_queue
from .settings import AMQPSettings
from .topology import Topology

__all__ = ["delete_topology"]


async def delete_topology(
    settings: AMQPSettings,
    queues: Iterable[str] | None = None,
    *,
    topology: Topology | None = None,
    limited: Mapping[str, Limits] | None = None,
) -> None:
    """Delete the queues and exchanges of ``topology`` (default: the settings') for ``queues``.

    ``queues`` are job queue names (default: ``settings.queues``); ``limited``
    names the limited handlers (their limits) whose queues go too. Connects
    with ``settings`` (URL, TLS, the ``publish_timeout_s`` retry) on a
    connection of its own, closed before it returns.
    """
    topology = topology or settings.topology
    wanted = settings.queues if queues is None else tuple(queues)
    names = [name for queue in wanted for name in topology.queues_of(queue)]
    names += [
        partition_queue(topology, queue, index)
        for queue in wanted
        for index in range(settings.partitions)
    ]
    names += limited_queues(topology, wanted, limited or {})
    names += topology.delay_queues()
    names += [topology.schedule_queue, topology.schedule_status_queue, topology.results_stream]
    names.append(topology.cancels_stream)
    connection = await dial(settings, settings.publish_timeout_s, robust=False)
    try:
        channel = await connection.channel()
        # queue.delete and exchange.delete of a missing name succeed: nothing to check.
        for name in names:
            await channel.queue_delete(name)
        for name in [*topology.exchanges(), topology.cancels_stream]:
            await channel.exchange_delete(name)
    finally:
        await connection.close()
