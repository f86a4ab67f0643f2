"""The RabbitMQ transport of results and groups, as :class:`~amqp_worker.AMQPWorker` plugs it in.

:class:`RabbitWorkflows` is a base of ``AMQPWorker``: the transport steps of
:class:`~amqp_worker._core.workflow_worker.WorkflowWorker`, each handed to
:mod:`~amqp_worker._rabbitmq.results` (the results stream) or
:mod:`~amqp_worker._rabbitmq.groups` (group queues). It also closes the kept
errand channels of those and of the unique-key locks (:mod:`~amqp_worker._rabbitmq.unique`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from amqp_worker._core.groups import GroupStatus
from amqp_worker._core.job import Job
from amqp_worker._core.results import JobResult, ResultSource
from amqp_worker._core.workflow import Group

from .groups import RabbitGroups
from .intake import Received
from .results import RabbitResults
from .settle import Settler
from .unique import RabbitLocks

__all__ = ["RabbitWorkflows"]

logger = logging.getLogger("amqp_worker")


class RabbitWorkflows:
    """Results in the results stream, group progress in group queues."""

    _results: RabbitResults
    _groups: RabbitGroups
    _settler: Settler
    _locks: RabbitLocks

    if TYPE_CHECKING:

        def _now(self) -> datetime: ...  # BaseWorker's: this class comes first in the MRO

    def _result_source(self) -> ResultSource:
        return self._results

    async def _store_result(self, record: JobResult) -> None:
        await self._results.store_result(record)

    async def _open_group(self, group: Group) -> None:
        await self._groups.open(group, self._now())

    async def _member_resolved(self, job: Job, queue: str, ok: bool, reason: str | None) -> None:
        await self._groups.resolved(job, ok, reason)

    async def group_status(self, group_id: str) -> GroupStatus:
        """Where the group ``group_id`` stands: read from its queue, or from the results stream.

        A read may find the group complete and let its callback go, as any
        member's check would; a finished group's record is kept for ``result_ttl_s``.
        """
        return await self._groups.status(group_id)

    async def _close_errands(self) -> None:
        """Close the kept errand channels of results, groups and unique locks."""
        await self._results.close()
        await self._groups.close()
        await self._locks.close()

    async def _unfinished(self, delivery: Received, job: Job, error: Exception) -> None:
        logger.warning(
            "job %s finished, but its result, group marker or next step was not sent (%s: %s); "
            "RabbitMQ gets it back and it runs again",
            job.id,
            type(error).__name__,
            error,
        )
        self._settler.hand_back(delivery[1])
