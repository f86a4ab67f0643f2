"""What the broker says about a fleet's limited handlers: jobs waiting, tokens, a leader.

For ``amqp-worker limits`` and the dashboard: passive declares of the limit,
token and leader queues (:mod:`amqp_worker._rabbitmq.limits`), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from amqp_worker._core.limits import Limits

from .extra_topology import leader_queue, limit_queue_names, token_queue
from .inspection import QueueInspector, QueueStat
from .settings import AMQPSettings

__all__ = ["LimitStatus", "limit_statuses"]


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limited handler, as the broker sees it now; None where a queue does not exist."""

    handler: str
    limits: Limits
    waiting: int | None
    """Jobs in its limit queues (all its lanes, all ``queues``), not started yet."""
    tokens: int | None
    """Rate tokens ready to take (at most ``burst``); None without a per-handler rate."""
    consumers: int | None
    """Workers consuming its limit queues (the first lane's or the one queue's)."""
    leader: bool | None
    """True if a worker is there to write its tokens (its leader queue has a consumer)."""


def _sum(stats: list[QueueStat | None]) -> int | None:
    found = [stat.ready for stat in stats if stat is not None]
    return sum(found) if found else None


async def limit_statuses(
    inspector: QueueInspector, settings: AMQPSettings, limited: Mapping[str, Limits]
) -> list[LimitStatus]:
    """The status of each handler in ``limited`` for the job queues ``settings.queues``."""
    topology = settings.topology
    statuses: list[LimitStatus] = []
    for handler, limits in sorted(limited.items()):
        stats = [
            await inspector.stat(name)
            for queue in settings.queues
            for name in limit_queue_names(topology, queue, handler, limits)
        ]
        tokens = leader = None
        if limits.rate is not None and limits.key is None:
            token_stat = await inspector.stat(token_queue(topology, handler))
            leader_stat = await inspector.stat(leader_queue(topology, handler))
            tokens = token_stat.ready if token_stat is not None else None
            leader = leader_stat.consumers > 0 if leader_stat is not None else None
        first = stats[0] if stats else None
        statuses.append(
            LimitStatus(
                handler,
                limits,
                waiting=_sum(stats),
                tokens=tokens,
                consumers=first.consumers if first is not None else None,
                leader=leader,
            )
        )
    return statuses
