"""The RabbitMQ transport of results and groups, as :class:`~amqp_worker.AMQPWorker` plugs it in.

:class:`RabbitWorkflows` is a base of ``AMQPWorker``: the transport steps of
:class:`~amqp_worker._core.workflow_worker.WorkflowWorker`, each handed to
:mod:`~amqp_worker._rabbitmq.results` (the results stream) or
:mod:`~amqp_worker._rabbitmq.groups` (group queues). It also closes the kept
errand channels of those and of the unique-key locks (:mod:`~amqp_worker._rabbitmq.unique`),
and parks what the intake refused, telling its workflow first.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from amqp_worker._core.failures import FailureReason
from amqp_worker._core.groups import GroupStatus
from amqp_worker._core.handlers import HandlerSpec
from amqp_worker._core.job import Job
from amqp_worker._core.registry import Registry
from amqp_worker._core.results import JobResult, ResultSource
from amqp_worker._core.workflow import Group

from .consumer import Delivery
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
        # BaseWorker's and AMQPWorker's: this class comes first in the MRO.
        _registry: Registry

        def _now(self) -> datetime: ...

        async def _after_parked(
            self, spec: HandlerSpec | None, job: Job, queue: str, reason: str, error: BaseException
        ) -> None: ...

        async def _park_message(
            self,
            queue: str,
            message: Delivery,
            reason: FailureReason,
            error: BaseException,
            job: Job | None = None,
            extra_headers: dict[str, Any] | None = None,
        ) -> None: ...

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

    async def _park_undecoded(
        self,
        queue: str,
        message: Delivery,
        reason: FailureReason,
        error: BaseException,
        job: Job | None = None,
        extra_headers: dict[str, Any] | None = None,
    ) -> None:
        """Park what the intake refused (unknown handler, crash loop); its workflow hears of it."""
        if job is not None:
            spec = self._registry.handlers.get(job.handler)
            await self._after_parked(spec, job, queue, reason, error)
        await self._park_message(queue, message, reason, error, job, extra_headers)
