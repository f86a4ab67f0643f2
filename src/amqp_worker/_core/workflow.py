"""Chains and groups: what they are, checked once, before anything is published.

A :class:`Chain` is jobs run one after another: the first step is enqueued
carrying the rest (``Job.chain``), and each worker that finishes a step
enqueues the next (:func:`next_step`) before it acks its own. A :class:`Group`
is jobs run side by side (``Job.group`` on each member) and, if ``then`` is
given, a callback job that runs once after all of them succeeded. How a worker
keeps a group's progress is its transport's business (``docs/workflows.md``).

Everything here is pure: building a workflow validates it and raises
:class:`~amqp_worker.errors.InvalidWorkflow` for a repeated id (a cycle: the
same job twice), a step that is itself a workflow, an empty chain, a group
over :data:`~amqp_worker._core.job.MAX_GROUP_SIZE` members.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue, ValidationError

from amqp_worker.errors import InvalidWorkflow, describe_validation_error

from .job import MAX_GROUP_SIZE, ChainLink, GroupMember, Job, validate_queue_name

__all__ = [
    "Chain",
    "Group",
    "chain",
    "group",
    "next_step",
]

#: The longest group id: the group's queue name adds a prefix to it (255 bytes in all).
MAX_GROUP_ID_BYTES = 160


def _new_workflow_id() -> str:
    return os.urandom(12).hex()


def _plain(job: Job, role: str) -> Job:
    if not isinstance(job, Job):
        raise InvalidWorkflow(f"a {role} must be a Job, got {type(job).__name__}")
    if job.chain is not None or job.group is not None:
        raise InvalidWorkflow(
            f"job {job.id} is already part of a workflow: a {role} must be a plain job "
            "(chains of groups and groups of chains are not supported)"
        )
    return job


def _unique(jobs: Iterable[Job]) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job.id in seen:
            raise InvalidWorkflow(
                f"job id {job.id} appears twice in one workflow (a cycle, or the same Job "
                "object used twice): give each step its own Job"
            )
        seen.add(job.id)


@dataclass(frozen=True, slots=True)
class Chain:
    """Jobs that run one after another; build it with :func:`chain`."""

    id: str
    steps: tuple[Job, ...]
    result_into: str | None = None

    @property
    def last(self) -> Job:
        """The last step: its result is the chain's result."""
        return self.steps[-1]

    def first(self) -> Job:
        """The job to enqueue: the first step, carrying the others in ``Job.chain``."""
        rest = list(self.steps[1:])
        link = ChainLink(
            id=self.id,
            step=0,
            steps=len(self.steps),
            next=rest,
            result_into=self.result_into,
        )
        return self.steps[0].model_copy(update={"chain": link})


def chain(*steps: Job, chain_id: str | None = None, result_into: str | None = None) -> Chain:
    """Run ``steps`` one after another: each starts after the one before it succeeded.

    With ``result_into``, each step after the first receives the previous
    step's return value in its args under that key (it must be JSON). A step
    that is parked stops the chain there; retrying it from the failed jobs
    continues the chain. Raises :class:`~amqp_worker.errors.InvalidWorkflow`
    for no steps, a repeated job id, or a step that is itself a workflow.
    """
    if not steps:
        raise InvalidWorkflow("a chain needs at least one step")
    plain = tuple(_plain(step, "chain step") for step in steps)
    _unique(plain)
    try:
        link = ChainLink(
            id=chain_id or _new_workflow_id(), step=0, steps=len(plain), result_into=result_into
        )
    except ValidationError as exc:
        raise InvalidWorkflow(f"chain: {describe_validation_error(exc)}") from None
    return Chain(link.id, plain, result_into)


@dataclass(frozen=True, slots=True)
class Group:
    """Jobs that run side by side, then a callback once; build it with :func:`group`."""

    id: str
    members: tuple[Job, ...]
    then: Job | None = None
    then_if_failed: bool = False

    def member_jobs(self) -> list[Job]:
        """The members as they are enqueued: each with its place in ``Job.group``."""
        size = len(self.members)
        return [
            job.model_copy(update={"group": GroupMember(id=self.id, index=index, size=size)})
            for index, job in enumerate(self.members)
        ]


def group(
    members: Iterable[Job],
    *,
    then: Job | None = None,
    group_id: str | None = None,
    then_if_failed: bool = False,
) -> Group:
    """Run ``members`` side by side and ``then`` once after every one of them succeeded.

    ``then`` runs exactly once, however often members are delivered or
    retried. If a member is parked, ``then`` waits: it runs when that member
    is retried and succeeds; with ``then_if_failed=True`` it runs once every
    member either succeeded or was parked. ``group_id`` (default: random)
    names the group on the broker; a group still open under the same id
    makes the perform fail with :class:`~amqp_worker.errors.GroupExists`.
    Raises :class:`~amqp_worker.errors.InvalidWorkflow` for no members, more
    than ``MAX_GROUP_SIZE``, a repeated job id, or a job that is already part
    of a workflow.
    """
    jobs = tuple(_plain(job, "group member") for job in members)
    if not jobs:
        raise InvalidWorkflow("a group needs at least one member")
    if len(jobs) > MAX_GROUP_SIZE:
        raise InvalidWorkflow(
            f"a group holds at most {MAX_GROUP_SIZE} members, got {len(jobs)}: "
            "split the work into several groups"
        )
    if then is not None and not isinstance(then, Job):
        raise InvalidWorkflow(f"then must be a Job, got {type(then).__name__}")
    if then is not None and then.group is not None:
        raise InvalidWorkflow(f"the callback {then.id} is already a member of a group")
    _unique([*jobs, *([then] if then is not None else [])])
    gid = group_id or _new_workflow_id()
    try:
        validate_queue_name(gid)
    except ValueError as exc:
        raise InvalidWorkflow(f"group id {gid[:60]!r} {exc}") from None
    if len(gid.encode()) > MAX_GROUP_ID_BYTES:
        raise InvalidWorkflow(f"a group id holds at most {MAX_GROUP_ID_BYTES} bytes")
    return Group(gid, jobs, then, then_if_failed)


def next_step(job: Job, value: JsonValue | Any) -> Job | None:
    """The chain step to enqueue after ``job`` succeeded with ``value``; None at the chain's end.

    The next step carries the steps after it. Its args get ``value`` under
    ``result_into`` when the chain says so (``value`` is JSON already).
    """
    link = job.chain
    if link is None or not link.next:
        return None
    following, *rest = link.next
    update: dict[str, Any] = {
        "chain": link.model_copy(update={"step": link.step + 1, "next": rest}),
        "attempt": 0,
    }
    if link.result_into is not None:
        update["args"] = {**following.args, link.result_into: value}
    return following.model_copy(update=update)
