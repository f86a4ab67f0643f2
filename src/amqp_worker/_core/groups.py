"""A group's progress, and the handle ``perform_group`` returns.

Each member that finishes leaves a marker with its group (how, is the
transport's business); :class:`GroupStatus` is what the markers say: how many
succeeded, which were parked, and whether the callback was let go.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .defaults import DEFAULT_RESULT_WAIT_S
from .results import JobHandle

__all__ = ["GroupHandle", "GroupSource", "GroupState", "GroupStatus", "ParkedMember"]

GroupState = Literal["open", "failed", "finished", "unknown"]


class ParkedMember(BaseModel):
    """A member of a group that was parked, and why."""

    model_config = ConfigDict(frozen=True)

    index: int
    job_id: str
    reason: str


class GroupStatus(BaseModel):
    """Where a group stands.

    ``state``: ``open`` while members are running or retrying; ``failed`` when
    every member finished but some were parked and the callback is waiting
    for them (retry them to go on); ``finished`` once the callback was let go
    (or, without one, every member succeeded); ``unknown`` for an id no worker
    knows (never created, or finished longer ago than ``result_ttl_s``).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    state: GroupState
    size: int = 0
    succeeded: int = 0
    parked: list[ParkedMember] = Field(default_factory=list)

    @property
    def pending(self) -> int:
        """Members neither succeeded nor parked yet."""
        return max(0, self.size - self.succeeded - len(self.parked))


class GroupSource(Protocol):
    """What a :class:`GroupHandle` asks: any worker."""

    async def group_status(self, group_id: str) -> GroupStatus: ...


class GroupHandle:
    """A performed group: its id, a :class:`JobHandle` per member and for the callback."""

    __slots__ = ("_source", "id", "members", "then")

    def __init__(
        self,
        group_id: str,
        members: list[JobHandle],
        then: JobHandle | None,
        source: GroupSource,
    ) -> None:
        self.id = group_id
        self.members = members
        self.then = then
        self._source = source

    def __repr__(self) -> str:
        return f"<GroupHandle {self.id} members={len(self.members)}>"

    async def status(self) -> GroupStatus:
        """The group's progress now."""
        return await self._source.group_status(self.id)

    async def wait(
        self, timeout_s: float = DEFAULT_RESULT_WAIT_S, poll_s: float = 0.2
    ) -> GroupStatus:
        """Poll :meth:`status` until the group is ``finished`` or ``failed``; return it.

        Raises ``TimeoutError`` if it is still open after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.status()
            if status.state in ("finished", "failed"):
                return status
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"group {self.id} is still {status.state} after {timeout_s}s "
                    f"({status.succeeded}/{status.size} succeeded)"
                )
            await asyncio.sleep(poll_s)

    async def results(self, timeout_s: float = DEFAULT_RESULT_WAIT_S) -> list[JsonValue]:
        """Every member's return value, in member order (their handlers keep results).

        Raises as :meth:`JobHandle.result` does for the first member that fails.
        """
        return list(await asyncio.gather(*(member.result(timeout_s) for member in self.members)))
