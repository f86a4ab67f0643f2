"""What the dashboard reads from the broker: queue counts, delayed, schedules, consumers, limits.

Over AMQP alone (passive declares; reading queues without taking anything,
see :mod:`amqp_worker._rabbitmq.inspection`); richer with the management API, which adds
in-progress counts, rates, the consumers themselves and job-queue discovery.
Nothing here ever creates, removes or reorders anything on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from amqp_worker._core.job import Job
from amqp_worker._core.limits import Limits
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.due import due_at_of
from amqp_worker._rabbitmq.inspection import QueueInspector, QueueStat, browse, unacked_counts
from amqp_worker._rabbitmq.limit_status import LimitStatus, limit_statuses
from amqp_worker._rabbitmq.schedule_status import ScheduleStatus

from .management import ConsumerInfo, ManagementAPI, ManagementUnavailable, QueueInfo

__all__ = ["DelayedJob", "Inspector", "Overview", "QueueRow", "limits_json"]

T = TypeVar("T")

#: rabbitmqctl costs about a second of CPU: ask it at most this often.
RABBITMQCTL_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One job queue on the overview; None where a number cannot be known."""

    queue: str
    ready: int | None
    in_progress: int | None
    due: int | None
    failed: int | None
    consumers: int | None
    publish_rate: float | None = None
    deliver_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows, at one moment."""

    at: datetime
    rows: tuple[QueueRow, ...]
    delayed: int | None
    """Jobs waiting in the delay queues, all job queues together."""
    management: bool
    """Whether the management API answered (rates, in-progress, consumers)."""
    notes: tuple[str, ...] = ()
    """What could not be shown, and why."""

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "rows": [
                {name: getattr(row, name) for name in QueueRow.__slots__} for row in self.rows
            ],
            "delayed": self.delayed,
            "management": self.management,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class DelayedJob:
    """A job waiting for its time, read from a delay or due queue."""

    id: str
    queue: str
    handler: str
    due_at: datetime | None
    where: str
    """The RabbitMQ queue it waits in."""


@dataclass(slots=True)
class _Cached:
    value: dict[str, int] | None = None
    at: float = field(default=-1e9)


class Inspector:
    """Reads one worker name's queues; one AMQP connection, plus the management API if given."""

    def __init__(self, broker: Broker, management: ManagementAPI | None = None) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.topology = broker.topology
        self.management = management
        self._inspector = QueueInspector(self.settings)
        self._inspect_lock = asyncio.Lock()
        self._connected = False
        self._unacked = _Cached()
        self._unacked_task: asyncio.Future[None] | None = None

    async def close(self) -> None:
        if self._unacked_task is not None:
            self._unacked_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._unacked_task
        await self._inspector.close()
        if self.management is not None:
            await self.management.aclose()

    async def _inspected(self, read: Callable[[QueueInspector], Awaitable[T]]) -> T:
        """``read(inspector)`` on the one shared inspector, connected first; one read at a time."""
        async with self._inspect_lock:
            if not self._connected:
                await self._inspector.connect()
                self._connected = True
            try:
                return await read(self._inspector)
            except Exception:
                # A lost connection: dial again on the next read.
                self._connected = False
                await self._inspector.close()
                raise

    async def _stat(self, name: str) -> QueueStat | None:
        return await self._inspected(lambda inspector: inspector.stat(name))

    # -- job queues -------------------------------------------------------------

    async def job_queues(self) -> tuple[str, ...]:
        """The configured job queues, plus those bound to the worker's exchange (management API)."""
        queues = list(self.settings.queues)
        if self.management is not None:
            # Jobs are routed by Job.queue, so the routing keys are job-queue names.
            with contextlib.suppress(ManagementUnavailable):
                queues += await self.management.bound_queues(self.topology.exchange)
        return tuple(dict.fromkeys(queues))

    # -- overview ---------------------------------------------------------------

    async def _unacked_local(self) -> dict[str, int] | None:
        """rabbitmqctl's unacked counts: the first call waits, later ones refresh in the background.

        rabbitmqctl takes about half a second of CPU; no refresh of the page
        should wait for it.
        """
        cached = self._unacked
        if time.monotonic() - cached.at < RABBITMQCTL_EVERY_S:
            return cached.value
        if cached.at < 0:
            await self._refresh_unacked()
        elif self._unacked_task is None or self._unacked_task.done():
            self._unacked_task = asyncio.ensure_future(self._refresh_unacked())
        return self._unacked.value

    async def _refresh_unacked(self) -> None:
        self._unacked = _Cached(await unacked_counts(self.settings), time.monotonic())

    async def overview(self) -> Overview:
        notes: list[str] = []
        managed: dict[str, QueueInfo] | None = None
        if self.management is not None:
            try:
                managed = await self.management.queues()
            except ManagementUnavailable as exc:
                notes.append(f"management API unreachable ({exc}): no rates or consumer details")
        else:
            notes.append(
                "no management API (--management-url): rates and consumer details are not "
                "shown; in progress comes from rabbitmqctl when the broker is on this machine"
            )
        unacked = None if managed is not None else await self._unacked_local()
        queues = await self.job_queues()
        rows = [await self._row(queue, managed, unacked) for queue in queues]
        return Overview(
            at=datetime.now(UTC),
            rows=tuple(rows),
            delayed=await self._delayed_total(managed),
            management=managed is not None,
            notes=tuple(notes),
        )

    async def _row(
        self, queue: str, managed: dict[str, QueueInfo] | None, unacked: dict[str, int] | None
    ) -> QueueRow:
        names = (
            self.topology.work_queue(queue),
            self.topology.due_queue(queue),
            self.topology.failed_queue(queue),
        )
        if managed is not None:
            work, due, failed = (managed.get(name) for name in names)
            return QueueRow(
                queue=queue,
                ready=work.ready if work else None,
                in_progress=work.unacked if work else None,
                due=(due.ready + due.unacked) if due else None,
                failed=failed.ready if failed else None,
                consumers=work.consumers if work else None,
                publish_rate=work.publish_rate if work else None,
                deliver_rate=work.deliver_rate if work else None,
            )
        work_stat, due_stat, failed_stat = [await self._stat(name) for name in names]
        return QueueRow(
            queue=queue,
            ready=work_stat.ready if work_stat else None,
            in_progress=(unacked.get(names[0], 0) if unacked is not None and work_stat else None),
            due=due_stat.ready if due_stat else None,
            failed=failed_stat.ready if failed_stat else None,
            consumers=work_stat.consumers if work_stat else None,
        )

    async def failed_total(self, queues: Sequence[str]) -> int:
        """Parked jobs in the failed-jobs queues of ``queues``, by passive declares."""
        stats = [await self._stat(self.topology.failed_queue(queue)) for queue in queues]
        return sum(stat.ready for stat in stats if stat is not None)

    async def _delayed_total(self, managed: dict[str, QueueInfo] | None) -> int | None:
        total: int | None = None
        for name in self.topology.delay_queues():
            if managed is not None:
                info = managed.get(name)
                count = None if info is None else info.ready + info.unacked
            else:
                stat = await self._stat(name)
                count = None if stat is None else stat.ready
            if count is not None:
                total = (total or 0) + count
        return total

    # -- delayed jobs -----------------------------------------------------------

    async def delayed_jobs(self, limit_per_queue: int = 200) -> list[DelayedJob]:
        """Jobs waiting in the due and delay queues, soonest first; at most ``limit_per_queue`` each.

        Reading holds each message for the milliseconds the read takes; one
        due meanwhile moves on when the read ends.
        """
        found: list[DelayedJob] = []
        queues = await self.job_queues()
        for where in [self.topology.due_queue(q) for q in queues] + self.topology.delay_queues():

            async def visit(message: AbstractIncomingMessage, where: str = where) -> bool:
                found.append(_delayed(message, where))
                return False

            await browse(self.broker.channel, where, visit, limit_per_queue)
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(found, key=lambda job: job.due_at or far)

    # -- schedules and consumers ------------------------------------------------

    async def schedules(self) -> ScheduleStatus | None:
        """The schedule leader's latest status (see ``amqp-worker schedules``); None if none."""
        body = await self._inspected(
            lambda inspector: inspector.peek(self.topology.schedule_status_queue)
        )
        if body is None:
            return None
        try:
            return ScheduleStatus.decode(body)
        except ValueError:
            return None

    async def limits(self, limited: Mapping[str, Limits]) -> list[LimitStatus]:
        """Each handler of ``limited``: jobs waiting in its limit queues, tokens, workers, leader.

        Counted over :meth:`job_queues`, by passive declares; nothing is read at all
        when ``limited`` is empty.
        """
        if not limited:
            return []
        settings = self.settings.model_copy(update={"queues": await self.job_queues()})
        return await self._inspected(lambda inspector: limit_statuses(inspector, settings, limited))

    async def consumers(self) -> list[ConsumerInfo] | None:
        """The consumers of the job, due and quarantine queues; None without the management API."""
        if self.management is None:
            return None
        queues = await self.job_queues()
        ours = {
            name
            for q in queues
            for name in (
                self.topology.work_queue(q),
                self.topology.due_queue(q),
                self.topology.quarantine_queue(q),
            )
        }
        ours.add(self.topology.schedule_queue)
        rows = await self.management.consumers()
        return sorted((c for c in rows if c.queue in ours), key=lambda c: (c.queue, c.connection))


def limits_json(statuses: Sequence[LimitStatus]) -> list[dict[str, Any]]:
    """``statuses`` as the overview's JSON: one object per handler; None where unknown or unset."""
    return [
        {
            "handler": status.handler,
            "rate": status.limits.rate,
            "rate_per_s": status.limits.rate_per_s,
            "burst": status.limits.token_burst,
            "concurrency": status.limits.concurrency,
            "per_key": status.limits.key_name,
            "waiting": status.waiting,
            "tokens": status.tokens,
            "workers": status.consumers,
            "leader": status.leader,
        }
        for status in statuses
    ]


def _delayed(message: AbstractIncomingMessage, where: str) -> DelayedJob:
    due_at = due_at_of(message.headers)
    try:
        job = Job.from_json(message.body)
    except ValidationError:
        return DelayedJob(message.message_id or "?", "?", "?", due_at, where)
    return DelayedJob(job.id, job.queue, job.handler, due_at, where)
