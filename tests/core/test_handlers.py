"""Handler inspection at register time."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_worker import InvalidArgs, InvalidHandler, Job
from amqp_worker._core.handlers import HandlerSpec


class Args(BaseModel):
    user_id: int


async def typed(args: Args) -> None: ...


def untyped(args): ...  # type: ignore[no-untyped-def]


def with_job(args: dict[str, Any], job: Job) -> None: ...


class CallableObject:
    async def __call__(self, args: Args, *, job: Job | None = None) -> None: ...


@pytest.mark.parametrize(
    ("func", "is_async", "model", "wants_job"),
    [
        (typed, True, Args, False),
        (untyped, False, None, False),
        (with_job, False, None, True),
        (CallableObject(), True, Args, True),
        (functools.partial(typed), True, Args, False),
        (lambda args: None, False, None, False),
    ],
)
def test_inspect(func: Any, is_async: bool, model: Any, wants_job: bool) -> None:
    spec = HandlerSpec.inspect("h", func)
    assert (spec.is_async, spec.args_model, spec.wants_job) == (is_async, model, wants_job)


def test_extra_required_parameters_are_rejected() -> None:
    def needs_more(args: dict[str, Any], db: object) -> None: ...

    with pytest.raises(InvalidHandler, match="db"):
        HandlerSpec.inspect("h", needs_more)


def test_a_non_str_name_is_rejected() -> None:
    with pytest.raises(InvalidHandler, match="str"):
        HandlerSpec.inspect(1, typed)  # type: ignore[arg-type]


def test_unresolvable_annotations_are_a_clear_error() -> None:
    def handler(args: Missing) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidHandler, match="annotations"):
        HandlerSpec.inspect("h", handler)


def test_parse_args_validates_into_the_model() -> None:
    spec = HandlerSpec.inspect("h", typed)
    assert spec.parse_args(Job(handler="h", args={"user_id": "7"})) == Args(user_id=7)
    with pytest.raises(InvalidArgs, match="Args"):
        spec.parse_args(Job(handler="h", args={"user_id": "seven"}))


def test_untyped_handlers_get_a_copy_of_the_args() -> None:
    spec = HandlerSpec.inspect("h", untyped)
    job = Job(handler="h", args={"a": 1})
    got = spec.parse_args(job)
    got["a"] = 2
    assert job.args == {"a": 1}
