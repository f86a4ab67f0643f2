"""Names and arguments of the queues workflows and fleet controls add, as pure functions.

They extend :class:`~amqp_worker._rabbitmq.topology.Topology` (no I/O;
unit-tested without a broker):

==========================  ===========================================  ======================
what                        name                                         kind
==========================  ===========================================  ======================
group queue                 ``name.group.<id>``                          classic, exclusive use
partition queue *i* of Q    ``name.partition.`` + work queue + ``.<i>``  quorum, single active
                                                                         consumer
==========================  ===========================================  ======================
"""

from __future__ import annotations

from typing import Any

from .topology import Topology, _check_length, queue_arguments

__all__ = ["group_queue_arguments", "partition_queue", "partition_queue_arguments"]


def group_queue_arguments(topology: Topology, callback_queue: str | None) -> dict[str, Any]:
    """A classic queue (it is consumed exclusively); its callback dead-letters to its work queue.

    No ``x-expires`` and no TTL: it holds the callback job until the group
    finishes, and a parked member keeps it open until retried or purged.
    """
    arguments: dict[str, Any] = {"x-queue-type": "classic"}
    if callback_queue is not None:
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = topology.work_queue(callback_queue)
    return arguments


def partition_queue(topology: Topology, queue: str, index: int) -> str:
    """Partition ``index`` of ``queue``: jobs with a ``partition_key`` that hashes there."""
    return _check_length("queue", f"{topology.name}.partition.{topology.work_queue(queue)}.{index}")


def partition_queue_arguments(
    topology: Topology, queue: str, max_deliveries: int
) -> dict[str, Any]:
    """A quorum queue with a single active consumer, whatever ``queue_type`` is.

    One consumer at a time, each with a prefetch of 1, runs its jobs one at
    a time in order; when that consumer dies, its job goes back to the head
    and the next consumer takes over. Quorum, because it counts deliveries:
    a job that kills every worker that runs it is dead-lettered into the
    failed-jobs queue after ``max_deliveries`` (the quarantine queue, which
    does that for work queues, would take it out of order).
    """
    return {
        **queue_arguments(
            "quorum",
            dead_letter_exchange="",
            dead_letter_routing_key=topology.failed_queue(queue),
            delivery_limit=max_deliveries,
        ),
        "x-single-active-consumer": True,
    }
