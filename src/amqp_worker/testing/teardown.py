"""``delete_topology``: what a test suite that runs real AMQPWorkers needs to clean up."""

from __future__ import annotations

from collections.abc import Iterable

from amqp_worker._rabbitmq import teardown
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.worker import AMQPWorker

__all__ = ["delete_topology"]


async def delete_topology(
    target: AMQPWorker | AMQPSettings, queues: Iterable[str] | None = None
) -> None:
    """Delete, messages and all, every queue and exchange ``target``'s name declared.

    For each job queue in ``queues`` (default: the worker's own ``queues``)
    its work, due, failed-jobs and quarantine queues (and, given a worker, the
    limit and token queues of its limited handlers); then the delay queues,
    the schedule queues and the exchanges, which every worker of the same
    ``name`` shares. Missing ones are skipped, so it is safe to call twice.
    Stop the worker first. Meant for a test broker or a test vhost: on one
    that other workers of this ``name`` use, it deletes their jobs too.
    """
    settings = target.settings if isinstance(target, AMQPWorker) else target
    if not isinstance(settings, AMQPSettings):
        raise TypeError(f"expected an AMQPWorker or AMQPSettings, got {type(target).__name__}")
    limited = target.limits if isinstance(target, AMQPWorker) else {}
    await teardown.delete_topology(settings, queues, limited=limited)
