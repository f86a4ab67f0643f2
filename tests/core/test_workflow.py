"""chain(), group(), next_step() and result values: pure, no worker."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from amqp_worker import InvalidResult, InvalidWorkflow, Job, JobHandle, JobResult, chain, group
from amqp_worker._core.job import MAX_GROUP_SIZE
from amqp_worker._core.results import result_json
from amqp_worker._core.workflow import next_step


def jobs(count: int) -> list[Job]:
    return [Job(handler="h", args={"n": n}) for n in range(count)]


def test_a_chain_carries_its_later_steps_in_the_first() -> None:
    a, b, c = jobs(3)
    first = chain(a, b, c, chain_id="c1").first()
    assert first.id == a.id
    assert first.chain is not None
    assert (first.chain.id, first.chain.step, first.chain.steps) == ("c1", 0, 3)
    assert [step.id for step in first.chain.next] == [b.id, c.id]
    assert Job.from_json(first.to_json()) == first  # it travels as JSON


def test_next_step_moves_along_and_passes_the_result_when_asked() -> None:
    a, b, c = jobs(3)
    second = next_step(chain(a, b, c, result_into="prev").first(), {"x": 1})
    assert second is not None
    assert second.id == b.id
    assert second.args == {"n": 1, "prev": {"x": 1}}
    assert second.chain is not None
    assert (second.chain.step, [s.id for s in second.chain.next]) == (1, [c.id])
    third = next_step(second, 7)
    assert third is not None
    assert third.args == {"n": 2, "prev": 7}
    assert next_step(third, None) is None  # the end
    assert next_step(a, 1) is None  # not a chain


def test_without_result_into_the_next_step_keeps_its_args() -> None:
    a, b = jobs(2)
    second = next_step(chain(a, b).first(), "ignored")
    assert second is not None
    assert second.args == {"n": 1}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda a, b: chain(), "at least one step"),
        (lambda a, b: chain(a, a), "appears twice"),
        (lambda a, b: chain(a, chain(a, b).first()), "already part of a workflow"),
        (lambda a, b: chain(a, "b"), "must be a Job"),
        (lambda a, b: chain(a, b, result_into=""), "result_into"),
        (lambda a, b: group([]), "at least one member"),
        (lambda a, b: group([a, a]), "appears twice"),
        (lambda a, b: group([a], then=a), "appears twice"),
        (lambda a, b: group([chain(a, b).first()]), "already part of a workflow"),
        (lambda a, b: group([a], group_id="bad*id"), "group id"),
        (lambda a, b: group([a], group_id="x" * 200), "at most"),
        (lambda a, b: group([a], then="callback"), "then must be a Job"),
    ],
)
def test_bad_workflows_fail_before_anything_is_published(build: Any, message: str) -> None:
    a, b = jobs(2)
    with pytest.raises(InvalidWorkflow, match=message):
        build(a, b)


def test_a_group_too_big_is_refused_and_the_largest_is_taken() -> None:
    base = Job(handler="h")
    many = [base.model_copy(update={"id": f"j{n}"}) for n in range(MAX_GROUP_SIZE + 1)]
    with pytest.raises(InvalidWorkflow, match="at most"):
        group(many)
    assert len(group(many[:-1]).members) == MAX_GROUP_SIZE


def test_group_members_know_their_place() -> None:
    members = group(jobs(3), group_id="g1").member_jobs()
    assert [(m.group.id, m.group.index, m.group.size) for m in members if m.group] == [
        ("g1", 0, 3),
        ("g1", 1, 3),
        ("g1", 2, 3),
    ]


class Out(BaseModel):
    when: datetime


@pytest.mark.parametrize(
    ("value", "adapter", "expected"),
    [
        (3, None, 3),
        ({"a": [1, "x", None]}, None, {"a": [1, "x", None]}),
        (Out(when=datetime(2030, 1, 1, tzinfo=UTC)), None, {"when": "2030-01-01T00:00:00Z"}),
        (
            Out(when=datetime(2030, 1, 1, tzinfo=UTC)),
            TypeAdapter(Out),
            {"when": "2030-01-01T00:00:00Z"},
        ),
        (None, None, None),
    ],
)
def test_results_become_json(value: Any, adapter: Any, expected: Any) -> None:
    assert result_json(value, adapter, 1024, "j") == expected


@pytest.mark.parametrize("value", [object(), math.nan, {"x": math.inf}, b"\xff\xfe"])
def test_a_result_that_is_not_json_is_refused(value: Any) -> None:
    with pytest.raises(InvalidResult, match="not JSON"):
        result_json(value, None, 1024, "j")


def test_a_result_too_large_is_refused() -> None:
    with pytest.raises(InvalidResult, match="over max_message_bytes=10"):
        result_json("x" * 20, None, 10, "j")


class _NoSource:
    async def wait_result(self, job_id: str, timeout_s: float, since: Any) -> JobResult:
        raise AssertionError("not asked")


def test_a_handle_is_its_id() -> None:
    handle = JobHandle("abc", _NoSource())
    assert handle == "abc"
    assert hash(handle) == hash("abc")
    assert {handle: 1}["abc"] == 1
    assert handle.id == "abc"
    assert type(handle.id) is str
    assert f"{handle}" == "abc"
