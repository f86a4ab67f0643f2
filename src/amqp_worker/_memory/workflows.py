"""Results and group progress for :class:`~amqp_worker.SimpleWorker`, in this process's memory.

Like the rest of the in-process worker, nothing here survives the process.
Results expire after ``result_ttl_s`` and at most :data:`MAX_RESULTS` are
kept (the oldest go first), so a long-running process does not grow without
bound.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from amqp_worker._core.groups import GroupState, GroupStatus, ParkedMember
from amqp_worker._core.job import Job
from amqp_worker._core.results import JobResult
from amqp_worker._core.workflow import Group
from amqp_worker.errors import GroupExists, ResultTimeout

__all__ = ["MAX_RESULTS", "MemoryGroups", "MemoryResults"]

#: The most results kept in memory at once.
MAX_RESULTS = 100_000


class MemoryResults:
    """Results by job id, each for ``ttl_s`` seconds; waiters are woken when one arrives."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._kept: OrderedDict[str, tuple[JobResult, float]] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[JobResult]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def store(self, record: JobResult) -> None:
        """Keep ``record`` (replacing an earlier one of the same job) and wake its waiters."""
        now = time.monotonic()
        self._kept.pop(record.job_id, None)
        self._kept[record.job_id] = (record, now + self.ttl_s)
        while self._kept:
            _, (_, expires) = next(iter(self._kept.items()))
            if expires > now and len(self._kept) <= MAX_RESULTS:
                break
            self._kept.popitem(last=False)
        for waiter in self._waiters.pop(record.job_id, []):
            if not waiter.done():
                waiter.set_result(record)

    def get(self, job_id: str) -> JobResult | None:
        """The kept record of ``job_id``, if any and not expired."""
        found = self._kept.get(job_id)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    async def wait_result(self, job_id: str, timeout_s: float, since: datetime | None) -> JobResult:
        found = self.get(job_id)
        if found is not None and (since is None or found.finished_at >= since):
            return found
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise ResultTimeout(f"no result of job {job_id} within {timeout_s}s") from None
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[job_id]


@dataclass(slots=True)
class _OpenGroup:
    group: Group
    succeeded: set[int] = field(default_factory=set)
    parked: dict[int, ParkedMember] = field(default_factory=dict)
    fired: bool = False


class MemoryGroups:
    """Open groups by id: which members finished, and whether the callback went."""

    def __init__(self, enqueue: Callable[[Job], Awaitable[object]]) -> None:
        self._enqueue = enqueue
        self._open: dict[str, _OpenGroup] = {}
        self._finished: OrderedDict[str, GroupStatus] = OrderedDict()

    def open(self, group: Group) -> None:
        """Start tracking ``group``; :class:`GroupExists` if one with its id is open."""
        if group.id in self._open:
            raise GroupExists(f"group {group.id} is still open: choose another group_id")
        self._finished.pop(group.id, None)
        self._open[group.id] = _OpenGroup(group)

    async def resolved(self, job: Job, ok: bool, reason: str | None) -> None:
        """Record a member's end; let the callback go once the group allows it."""
        member = job.group
        assert member is not None
        state = self._open.get(member.id)
        if state is None or state.fired:
            return  # a duplicate after the group finished
        if ok:
            state.succeeded.add(member.index)
            state.parked.pop(member.index, None)
        elif member.index not in state.succeeded:
            state.parked[member.index] = ParkedMember(
                index=member.index, job_id=job.id, reason=reason or "unknown"
            )
        size = len(state.group.members)
        complete = len(state.succeeded) == size
        resolved = len(state.succeeded) + len(state.parked) == size
        if complete or (resolved and state.group.then_if_failed):
            state.fired = True
            del self._open[member.id]
            self._finished[member.id] = self._status(state, "finished")
            while len(self._finished) > MAX_RESULTS:
                self._finished.popitem(last=False)
            if state.group.then is not None:
                await self._enqueue(state.group.then)

    def status(self, group_id: str) -> GroupStatus:
        state = self._open.get(group_id)
        if state is not None:
            size = len(state.group.members)
            failed = len(state.succeeded) + len(state.parked) == size
            return self._status(state, "failed" if failed else "open")
        return self._finished.get(group_id) or GroupStatus(id=group_id, state="unknown")

    @staticmethod
    def _status(state: _OpenGroup, name: GroupState) -> GroupStatus:
        return GroupStatus(
            id=state.group.id,
            state=name,
            size=len(state.group.members),
            succeeded=len(state.succeeded),
            parked=sorted(state.parked.values(), key=lambda parked: parked.index),
        )
