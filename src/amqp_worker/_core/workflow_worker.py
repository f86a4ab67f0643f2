"""The results and workflow half of every worker: what a finished job leaves behind.

:class:`WorkflowWorker` is a base of :class:`~amqp_worker._core.base.BaseWorker`.
It performs chains and groups, makes :class:`~amqp_worker.JobHandle` s, and,
after each attempt, does what the job's handler and workflow ask, in an order
that a crash at any point cannot break:

1. keep the result (``result=True``), or the failure record of a parked job;
2. tell the job's group that this member finished (succeeded or parked);
3. enqueue the chain's next step;

all *before* the delivery is settled. A crash in between redelivers the job,
and the steps run again: a result kept twice, a member marker twice (groups
count each member once), a next step enqueued twice under the same id
(at-least-once, like every job). Where results and group markers live is the
transport's business (the abstract methods).
"""

from __future__ import annotations

import abc
import builtins
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import JsonValue

from amqp_worker.errors import DuplicateJob, InvalidResult, JobTooLarge

from .defaults import DEFAULT_MAX_MESSAGE_BYTES
from .groups import GroupHandle, GroupStatus
from .handlers import HandlerSpec
from .job import Job
from .results import JobHandle, JobResult, ResultSource, result_json
from .workflow import Chain, Group, next_step

__all__ = ["WorkflowWorker"]

logger = logging.getLogger("amqp_worker")


class WorkflowWorker(abc.ABC):
    """Chains, groups and results, on top of a worker's enqueue and transport."""

    #: The largest JSON a result may have (each worker sets its ``max_message_bytes``).
    _max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    # -- provided by BaseWorker -----------------------------------------------------

    @abc.abstractmethod
    async def perform(self, job: Job) -> str: ...

    @abc.abstractmethod
    async def perform_many(self, jobs: Iterable[Job]) -> builtins.list[str]: ...

    @abc.abstractmethod
    def _now(self) -> datetime: ...

    @abc.abstractmethod
    async def _unique_finished(self, job: Job | None) -> None: ...

    # -- the public API -------------------------------------------------------------

    def handle(self, job_id: str, since: datetime | None = None) -> JobHandle:
        """A :class:`~amqp_worker.JobHandle` for ``job_id``, as ``perform`` returns it.

        For a process that only knows the id. ``since`` (a timezone-aware
        time, default: as far back as results are kept) is when the job was
        enqueued or later: the search for its result starts there.
        """
        return JobHandle(job_id, self._result_source(), since)

    async def perform_chain(self, chain: Chain) -> JobHandle:
        """Enqueue ``chain`` (see :func:`~amqp_worker.chain`); return the *last* step's handle.

        Its :meth:`~amqp_worker.JobHandle.result` is the chain's result (when
        the last step's handler keeps results).
        """
        if not isinstance(chain, Chain):
            raise TypeError(f"expected a Chain, got {type(chain).__name__}")
        self._check_steps(chain.steps)
        since = self._now()
        await self.perform(chain.first())
        return self.handle(chain.last.id, since)

    async def perform_group(self, group: Group) -> GroupHandle:
        """Enqueue ``group`` (see :func:`~amqp_worker.group`); return its :class:`~amqp_worker.GroupHandle`.

        The group is opened before any member is enqueued. If some members are
        not enqueued, raises :class:`~amqp_worker.errors.PublishError` naming
        them (perform them again with the same ids: the group waits for them).
        """
        if not isinstance(group, Group):
            raise TypeError(f"expected a Group, got {type(group).__name__}")
        self._check_steps([*group.members, *([group.then] if group.then is not None else [])])
        since = self._now()
        await self._open_group(group)
        ids = await self.perform_many(group.member_jobs())
        members = [self.handle(job_id, since) for job_id in ids]
        then = self.handle(group.then.id, since) if group.then is not None else None
        return GroupHandle(group.id, members, then, self)

    @abc.abstractmethod
    async def group_status(self, group_id: str) -> GroupStatus:
        """Where the group ``group_id`` stands (:class:`~amqp_worker.GroupStatus`)."""

    # -- the transport's part -------------------------------------------------------

    def _check_steps(self, jobs: Iterable[Job]) -> None:  # noqa: B027 - optional, most do nothing
        """Refuse a workflow this worker can tell will not run (a worker that knows every handler)."""

    @abc.abstractmethod
    def _result_source(self) -> ResultSource:
        """Where this worker's handles find results."""

    @abc.abstractmethod
    async def _store_result(self, record: JobResult) -> None:
        """Keep ``record`` for ``result_ttl_s``; return once it is kept."""

    @abc.abstractmethod
    async def _open_group(self, group: Group) -> None:
        """Make the place where ``group``'s members report, holding its callback; once."""

    @abc.abstractmethod
    async def _member_resolved(self, job: Job, queue: str, ok: bool, reason: str | None) -> None:
        """Report that ``job``, a group member, succeeded (``ok``) or was parked for ``reason``."""

    async def _unfinished(self, delivery: Any, job: Job, error: Exception) -> None:
        """The result, group marker or next step of ``job`` could not be sent: run it again later.

        ``delivery`` is the transport's (see BaseWorker). In memory nothing can fail so: re-raise.
        """
        raise error

    # -- after an attempt -----------------------------------------------------------
    async def _succeeded(self, delivery: Any, job: Job) -> None:  # noqa: B027 - memory: nothing
        """Settle the delivery of a job whose handler succeeded (ack it); the transport's."""

    async def _settle_success(
        self, delivery: Any, spec: HandlerSpec | None, job: Job, queue: str, value: Any
    ) -> InvalidResult | None:
        """After a successful attempt: :meth:`_after_success`, then ack; None once settled.

        Returns the :class:`~amqp_worker.errors.InvalidResult` that makes the
        job a failure instead. If a step could not be sent, the job is
        handed back (:meth:`_unfinished`).
        """
        try:
            await self._after_success(spec, job, queue, value)
        except InvalidResult as exc:
            return exc
        except Exception as exc:
            await self._unfinished(delivery, job, exc)
            return None
        await self._succeeded(delivery, job)
        await self._unique_finished(job)  # after the ack: a crash before it keeps the key
        return None

    async def _after_success(
        self, spec: HandlerSpec | None, job: Job, queue: str, value: Any
    ) -> None:
        """Keep the result, tell the group, enqueue the next step; before the job is acked.

        Raises :class:`~amqp_worker.errors.InvalidResult` if the result cannot
        be kept or passed on: the job is then parked, and nothing went out.
        """
        keep = spec is not None and spec.result
        link = job.chain
        passes_on = link is not None and link.result_into is not None and bool(link.next)
        plain: JsonValue = None
        if keep or passes_on:
            adapter = spec.result_adapter if spec is not None else None
            plain = result_json(value, adapter, self._max_message_bytes, job.id)
        following = next_step(job, plain)
        if following is not None:
            size = len(following.to_json())
            if size > self._max_message_bytes:
                raise InvalidResult(
                    f"chain step {following.id} with the result of job {job.id} would be "
                    f"{size} bytes of JSON, over max_message_bytes={self._max_message_bytes}"
                )
        if keep:
            await self._store_result(JobResult.succeeded(job, queue, plain, self._now()))
        if job.group is not None:
            await self._member_resolved(job, queue, True, None)
        if following is not None:
            try:
                await self.perform(following)
            except JobTooLarge as exc:  # the broker's own limit may be lower
                raise InvalidResult(str(exc)) from None
            except DuplicateJob as exc:
                # Its key is live: this very step, enqueued before a crash redelivered this
                # job, or another job. Refused like any enqueue; the chain ends here.
                logger.warning("chain step %s not enqueued: %s", following.id, exc)

    async def _after_parked(
        self, spec: HandlerSpec | None, job: Job, queue: str, reason: str, error: BaseException
    ) -> None:
        """Keep the failure record and tell the group; before the job is parked."""
        if spec is not None and spec.result:
            await self._store_result(JobResult.failed(job, queue, reason, error, self._now()))
        if job.group is not None:
            await self._member_resolved(job, queue, False, reason)
