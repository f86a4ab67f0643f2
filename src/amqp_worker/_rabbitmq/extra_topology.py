"""Names and arguments of the queues workflows and fleet controls add, as pure functions.

They extend :class:`~amqp_worker._rabbitmq.topology.Topology` (no I/O;
unit-tested without a broker):

==========================  ===========================================  ======================
what                        name                                         kind
==========================  ===========================================  ======================
group queue                 ``name.group.<id>``                          classic, exclusive use
partition queue *i* of Q    ``name.partition.`` + work queue + ``.<i>``  quorum, single active
                                                                         consumer
limit queue of handler H    ``name.limit.`` + work queue + ``.H``        quorum (rate only)
limit lane *i* of H         ``name.limit.`` + work queue + ``.H.<i>``    quorum, single active
                                                                         consumer
key lane *i* of H           ``name.limit.`` + work queue + ``.H.k<i>``   quorum, single active
                                                                         consumer
key window of H, key K      ``name.keyrate.H.<rate>.`` + SHA-256 of K    classic, max-length
                                                                         count, TTL window
token queue of H            ``name.tokens.H``                            quorum, max-length
                                                                         burst, drop-head
token leader queue of H     ``name.tokens.H.leader``                     quorum, single active
                                                                         consumer
==========================  ===========================================  ======================
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from amqp_worker._core.limits import KEY_LANES, Limits

from .topology import Topology, checked_name, queue_arguments

#: The shortest ``x-expires`` of a key window queue (see :func:`key_window_arguments`).
KEY_WINDOW_EXPIRES_MIN_MS = 60_000

__all__ = [
    "KEY_WINDOW_EXPIRES_MIN_MS",
    "group_queue_arguments",
    "key_lane_queue",
    "key_window_arguments",
    "key_window_queue",
    "leader_queue",
    "leader_queue_arguments",
    "limit_queue",
    "limit_queue_arguments",
    "limit_queue_names",
    "limited_queues",
    "partition_queue",
    "partition_queue_arguments",
    "token_queue",
    "token_queue_arguments",
]


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
    return checked_name("queue", f"{topology.name}.partition.{topology.work_queue(queue)}.{index}")


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


def limit_queue(topology: Topology, queue: str, handler: str, lane: int | None = None) -> str:
    """Where jobs of a limited ``handler`` from ``queue`` wait: one queue, or lane ``lane``.

    A handler with a concurrency limit N has N lanes (0 to N-1); one with only
    a rate limit has the one queue (``lane`` None).
    """
    base = f"{topology.name}.limit.{topology.work_queue(queue)}.{handler}"
    return checked_name("queue", base if lane is None else f"{base}.{lane}")


def limit_queue_names(topology: Topology, queue: str, handler: str, limits: Limits) -> list[str]:
    """Every limit queue of ``handler``'s jobs from ``queue``: its lanes, or its one queue."""
    if limits.concurrency is None:
        return [limit_queue(topology, queue, handler)]
    if limits.key is not None:
        return [key_lane_queue(topology, queue, handler, i) for i in range(KEY_LANES)]
    return [limit_queue(topology, queue, handler, i) for i in range(limits.concurrency)]


def limited_queues(
    topology: Topology, queues: Iterable[str], limited: Mapping[str, Limits]
) -> list[str]:
    """Every queue the ``limited`` handlers may have declared for jobs from ``queues``.

    Their limit queues, and (whether a handler has a rate or not) its token
    and leader queues. Per-key rate windows are not listed: their names hold
    the keys, and they expire on their own.
    """
    wanted = tuple(queues)
    names: list[str] = []
    for handler, limits in limited.items():
        names += [
            n for queue in wanted for n in limit_queue_names(topology, queue, handler, limits)
        ]
        names += [token_queue(topology, handler), leader_queue(topology, handler)]
    return names


def limit_queue_arguments(
    topology: Topology, queue: str, max_deliveries: int, *, lane: bool
) -> dict[str, Any]:
    """A quorum queue that dead-letters to ``queue``'s failed jobs after ``max_deliveries``.

    Quorum, whatever ``queue_type`` is, because it counts deliveries: a job
    that kills every worker is parked (reason ``delivery_limit``) instead of
    quarantined, which would take it out of its lane. A lane has a single
    active consumer, with a prefetch of 1: one job at a time per lane.
    """
    arguments = partition_queue_arguments(topology, queue, max_deliveries)
    if not lane:
        del arguments["x-single-active-consumer"]
    return arguments


def token_queue(topology: Topology, handler: str) -> str:
    """The rate tokens of ``handler``: each start of an attempt takes one."""
    return checked_name("queue", f"{topology.name}.tokens.{handler}")


def token_queue_arguments(burst: int) -> dict[str, Any]:
    """At most ``burst`` tokens wait; the leader's extra tokens push out the oldest.

    Quorum, so the tokens (and the limit) survive the loss of a cluster node;
    ``drop-head`` because a token is not a job: dropping one loses nothing.
    """
    return {**queue_arguments("quorum"), "x-max-length": burst, "x-overflow": "drop-head"}


def leader_queue(topology: Topology, handler: str) -> str:
    """The baton of ``handler``'s token leader: whoever holds its message writes the tokens."""
    return checked_name("queue", f"{topology.name}.tokens.{handler}.leader")


def leader_queue_arguments() -> dict[str, Any]:
    """Single active consumer; at most one baton waits (a second publish is refused).

    RabbitMQ counts only ready messages against ``x-max-length``: with the
    baton held (unacked) by the leader, one more can wait, never more.
    """
    return {
        **queue_arguments("quorum"),
        "x-single-active-consumer": True,
        "x-max-length": 1,
        "x-overflow": "reject-publish",
    }


def key_lane_queue(topology: Topology, queue: str, handler: str, lane: int) -> str:
    """Key lane ``lane`` of ``handler``: jobs whose key hashes there, at most N of them running."""
    return checked_name(
        "queue", f"{topology.name}.limit.{topology.work_queue(queue)}.{handler}.k{lane}"
    )


def key_window_queue(
    topology: Topology, handler: str, key: str, count: int, window_s: float
) -> str:
    """The start markers of ``key`` for ``handler``'s per-key rate of ``count`` per ``window_s``.

    Named by a hash of the key, and by the rate: a fleet that changes the rate
    starts new windows (the old ones expire) instead of failing to declare.
    """
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    rate = f"{count}per{math.ceil(window_s * 1000)}ms"
    return checked_name("queue", f"{topology.name}.keyrate.{handler}.{rate}.{digest}")


def key_window_arguments(count: int, window_s: float) -> dict[str, Any]:
    """At most ``count`` markers, each gone after ``window_s``: a sliding window of starts.

    A publish over ``count`` is refused (nacked): the key is over its rate.
    Classic, whatever ``queue_type``: a quorum queue per key would cost a Raft
    group each. ``x-expires`` is safe here: the queue holds markers, never a
    job, and a worker declares it again (restarting its idle clock) at least
    every half of it, while its markers live at most ``window_s``.
    """
    ttl_ms = max(1, math.ceil(window_s * 1000))
    return {
        "x-queue-type": "classic",
        "x-max-length": count,
        "x-overflow": "reject-publish",
        "x-message-ttl": ttl_ms,
        "x-expires": max(2 * ttl_ms, KEY_WINDOW_EXPIRES_MIN_MS),
    }
