"""The Job wire contract: validation at construction, round trips, the published schema."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from amqp_worker import Job
from amqp_worker._core.job import job_schema_json, stamped

SCHEMA = Path(__file__).parents[2] / "docs" / "job.schema.json"


def field_of(exc: ValidationError) -> str:
    return ".".join(str(part) for part in exc.errors()[0]["loc"])


def test_defaults() -> None:
    job = Job(handler="send_email")
    assert job.queue == "default"
    assert job.args == {}
    assert job.attempt == 0
    assert uuid.UUID(job.id)
    assert job.enqueued_at.tzinfo is UTC
    assert Job(handler="h").id != job.id


def test_job_is_immutable() -> None:
    job = Job(handler="h")
    with pytest.raises(ValidationError):
        job.queue = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "handler"),
        ({"handler": ""}, "handler"),
        ({"handler": "h", "queue": ""}, "queue"),
        ({"handler": "a\x00b"}, "handler"),
        ({"handler": "h", "queue": "tab\tqueue"}, "queue"),
        ({"handler": "x" * 256}, "handler"),
        ({"handler": "h", "queue": "q" * 256}, "queue"),
        ({"handler": "h", "queue": "ünïcode"}, "queue"),  # AMQP clients refuse it
        ({"handler": "h", "queue": "a.*.b"}, "queue"),
        ({"handler": "é" * 128}, "handler"),  # 256 bytes of UTF-8
        ({"handler": 42}, "handler"),
        ({"handler": "h", "attempt": -1}, "attempt"),
        ({"handler": "h", "args": []}, "args"),
        ({"handler": "h", "args": "x=1"}, "args"),
        ({"handler": "h", "enqueued_at": datetime(2026, 1, 1)}, "enqueued_at"),
    ],
)
def test_bad_fields_are_rejected_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Job(**fields)
    assert field_of(info.value).startswith(field)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        b"bytes",
        {1, 2},
        (1, 2),
        object(),
        datetime.now(UTC),
        {"deep": [1, {"x": float("nan")}]},
    ],
    ids=["nan", "inf", "-inf", "bytes", "set", "tuple", "object", "datetime", "nested-nan"],
)
def test_args_must_be_plain_json(value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Job(handler="h", args={"v": value})
    assert field_of(info.value).startswith("args")


def test_names_at_the_limit_and_with_dots_are_fine() -> None:
    job = Job(handler="x" * 255, queue="billing.invoices.eu-west:1/#@,+ x")
    assert job.queue == "billing.invoices.eu-west:1/#@,+ x"
    assert Job(handler="é-handler ✓", queue="q" * 255).handler == "é-handler ✓"


def test_enqueued_at_is_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    job = Job(handler="h", enqueued_at=datetime(2026, 1, 1, 12, tzinfo=plus2))
    assert job.enqueued_at == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert job.enqueued_at.tzinfo is UTC


def test_json_round_trip() -> None:
    job = Job(handler="h", queue="q", args={"user_id": 123, "big": 2**63, "s": "ü"}, attempt=2)
    again = Job.from_json(job.to_json())
    assert again == job
    assert again.args["big"] == 2**63  # ints stay ints, unlike Buffalo's JSON floats


def test_a_minimal_foreign_body_decodes() -> None:
    job = Job.from_json(b'{"handler": "send_email", "args": {"user_id": 1}}')
    assert job.queue == "default"
    assert job.attempt == 0


def test_unknown_fields_are_preserved() -> None:
    body = b'{"handler":"h","trace":{"span":"abc"},"priority":5}'
    job = Job.from_json(body)
    out = json.loads(job.to_json())
    assert out["trace"] == {"span": "abc"}
    assert out["priority"] == 5
    assert json.loads(job.model_copy(update={"attempt": 1}).to_json())["priority"] == 5


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'"x"', b'{"handler": ""}', b'{"args": {}}', b"\xff\xfe"],
)
def test_from_json_rejects_garbage_with_a_validation_error(body: bytes) -> None:
    with pytest.raises(ValidationError):
        Job.from_json(body)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(args=st.dictionaries(st.text(), json_values, max_size=5))
def test_any_json_args_round_trip(args: dict[str, Any]) -> None:
    job = Job(handler="h", args=args)
    assert Job.from_json(job.to_json()).args == job.args


def test_the_committed_schema_is_current() -> None:
    assert SCHEMA.read_text() == job_schema_json(), "run scripts/gen-schema and commit the result"


def test_the_schema_requires_only_the_handler() -> None:
    schema = json.loads(job_schema_json())
    assert schema["required"] == ["handler"]
    assert schema["additionalProperties"] is True
    assert set(schema["properties"]) == {
        "handler",
        "chain",
        "group",
        "queue",
        "args",
        "id",
        "attempt",
        "enqueued_at",
        "scheduled_at",
        "expires_at",
        "priority",
        "partition_key",
        "unique_key",
        "unique_for_s",
    }


def test_the_controls_fields_are_checked_and_absent_when_unset() -> None:
    assert "priority" not in json.loads(Job(handler="h").to_json())
    with pytest.raises(ValueError, match="priority"):
        Job(handler="h", priority=10)
    with pytest.raises(ValueError, match="expires_at"):
        Job(handler="h", expires_at=datetime(2026, 1, 1))  # naive: ambiguous
    with pytest.raises(ValueError, match="unique_for_s"):
        Job(handler="h", unique_key="k", unique_for_s=0)
    job = Job(handler="h", priority=9, unique_key="k", unique_for_s=60.0)
    assert Job.from_json(job.to_json()) == job


def test_default_ids_are_random_uuid4_strings() -> None:
    ids = {Job(handler="h").id for _ in range(1000)}
    assert len(ids) == 1000
    for job_id in list(ids)[:100]:
        parsed = uuid.UUID(job_id)
        assert str(parsed) == job_id
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "job",
    [
        Job(handler="h"),
        Job(handler="h", queue="q", args={"a": [1, {"b": None}]}, id="x", attempt=3),
        Job.model_validate({"handler": "h", "future_field": {"kept": True}}),
        Job(handler="h", scheduled_at=datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_stamped_copy_is_the_model_copy_and_leaves_the_job_alone(job: Job) -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    before = job.model_dump()
    copy = stamped(job, at)
    expected = job.model_copy(update={"enqueued_at": at})
    assert copy == expected
    assert type(copy) is Job
    assert copy.model_fields_set == expected.model_fields_set
    assert copy.model_extra == expected.model_extra
    assert copy.to_json() == expected.to_json()
    assert job.model_dump() == before
    if job.model_extra:  # the copy's extras are its own
        assert copy.model_extra is not job.model_extra
