"""The :class:`Job` envelope: the wire contract between publishers and workers.

A job travels as one UTF-8 JSON object (see ``docs/job.schema.json``)::

    {"handler": "send_email", "queue": "default", "args": {"user_id": 123},
     "id": "6f1c...", "attempt": 0, "enqueued_at": "2026-11-28T04:00:00Z"}

Only ``handler`` is required; a publisher in any language may omit the rest.
Fields this version does not know are kept and sent on unchanged, so an older
worker never strips what a newer publisher added.
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema
from pydantic_core import PydanticUndefined

from amqp_worker.errors import JobTooLarge

from .defaults import DEFAULT_QUEUE

__all__ = [
    "MAX_GROUP_SIZE",
    "MAX_PRIORITY",
    "ChainLink",
    "GroupMember",
    "Job",
    "JsonArgs",
    "job_schema_json",
    "stamped",
    "validate_name",
    "validate_queue_name",
]

#: AMQP short strings (queue names, routing keys) hold at most 255 bytes.
MAX_NAME_BYTES = 255
#: Unicode category Cc, exactly: C0 controls, DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate_name(value: str) -> str:
    """Check a queue or handler name; return it unchanged or raise ``ValueError``.

    A name must be non-empty, at most 255 bytes of UTF-8 (an AMQP short
    string) and free of control characters, which break logs and headers.
    """
    if value.isascii() and value.isprintable() and 0 < len(value) <= MAX_NAME_BYTES:
        # The common case, checked in one pass: printable ASCII has no control
        # characters and one byte per character. Every job decode runs this twice.
        return value
    if not value:
        raise ValueError("must not be empty")
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_NAME_BYTES} bytes of UTF-8, got {size}")
    control = _CONTROL.search(value)
    if control:
        raise ValueError(f"must not contain control characters, found {control.group()!r}")
    return value


#: Characters the AMQP 0-9-1 client stack (pamqp) accepts in queue and exchange names.
QUEUE_NAME_CHARS = re.compile(r"[A-Za-z0-9\-_.:@#,/+ ]+")


def validate_queue_name(value: str) -> str:
    """Check a queue name: :func:`validate_name`, plus the characters AMQP clients accept.

    Letters, digits, space and ``- _ . : @ # , / +`` are allowed, so dotted
    names such as ``billing.invoices`` work; ``*`` and non-ASCII do not.
    """
    if len(value) <= MAX_NAME_BYTES and QUEUE_NAME_CHARS.fullmatch(value):
        return value  # these characters are all printable ASCII: validate_name holds
    validate_name(value)
    if not QUEUE_NAME_CHARS.fullmatch(value):
        bad = sorted({c for c in value if not QUEUE_NAME_CHARS.fullmatch(c)})
        raise ValueError(
            f"may only hold letters, digits, space and - _ . : @ # , / +; found {bad!r}"
        )
    return value


#: JSON values that hold nothing non-finite; skipped without a call (the common case).
_PLAIN = (str, int, bool, type(None))


def _reject_non_finite(value: Any, path: str = "args") -> None:
    # JSON has no NaN or Infinity: Python's json module would emit them anyway,
    # and every other language's parser would then reject the whole job.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} holds {value!r}, which JSON cannot represent")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(item, _PLAIN):
                _reject_non_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, _PLAIN):
                _reject_non_finite(item, f"{path}[{index}]")


def _finite_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    _reject_non_finite(value)
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (a naive datetime is ambiguous)")
    return value.astimezone(UTC)


def _is_none(value: Any) -> bool:
    return value is None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    """A random (version 4) UUID as ``str(uuid.uuid4())`` gives it, without the UUID object.

    Every ``Job()`` without an id calls this: the same 122 bits from
    ``os.urandom``, formatted directly instead of through ``uuid.UUID``.
    """
    data = bytearray(os.urandom(16))
    data[6] = (data[6] & 0x0F) | 0x40  # version 4
    data[8] = (data[8] & 0x3F) | 0x80  # variant RFC 4122
    h = data.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


QueueName = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME_BYTES,
            "pattern": "^[A-Za-z0-9\\-_.:@#,/+ ]+$",
        }
    ),
    AfterValidator(validate_queue_name),
]
Name = Annotated[
    str,
    # The schema states the bounds; validate_name enforces the byte limit exactly.
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES}),
    AfterValidator(validate_name),
]

#: Handler arguments: a JSON object of JSON values (no NaN, bytes, sets or objects).
JsonArgs = Annotated[dict[str, JsonValue], AfterValidator(_finite_json)]


def check_size(job_id: str, size: int, max_bytes: int) -> None:
    """Raise :class:`~amqp_worker.errors.JobTooLarge` if a body of ``size`` bytes is over the limit."""
    if size > max_bytes:
        raise JobTooLarge(
            f"job {job_id} is {size} bytes of JSON, over max_message_bytes={max_bytes}: "
            "pass a reference (a URL, a database key) in its args instead of the data"
        )


#: The highest ``Job.priority``: RabbitMQ advises at most 10 levels (each costs a queue).
MAX_PRIORITY = 9

#: The largest ``attempt``: it is written to the ``aw-attempt`` header.
MAX_ATTEMPT = 2**31 - 1


class Job(BaseModel):
    """One unit of work: which handler runs, on which queue, with which args.

    A ``Job`` is immutable. Construction validates everything that will go on
    the wire, so bad input fails here with a :class:`pydantic.ValidationError`
    naming the field, before anything is published.

    Performing the same ``Job`` twice enqueues it twice under the same ``id``;
    build a new ``Job`` per enqueue when ids must differ.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://amqp-worker.dev/schema/job.json",
            "description": (
                "An amqp-worker job: the UTF-8 JSON body of one AMQP message. "
                "Only `handler` is required. Unknown properties are kept and passed on."
            ),
        },
    )

    handler: Name = Field(description="Name of the registered handler that runs this job.")
    queue: QueueName = Field(
        default=DEFAULT_QUEUE, description="Work queue the job is placed into."
    )
    args: JsonArgs = Field(
        default_factory=dict,
        description="Arguments passed to the handler: a JSON object.",
    )
    id: Name = Field(default_factory=_new_id, description="Unique job id; a UUID by default.")
    attempt: int = Field(
        default=0,
        ge=0,
        # It travels in an AMQP header (aw-attempt), a signed 32-bit field here.
        le=MAX_ATTEMPT,
        description="How many times this job has been tried before; 0 on first delivery.",
    )
    enqueued_at: Annotated[datetime, AfterValidator(_aware_utc)] = Field(
        default_factory=_utc_now,
        description="When the job was enqueued: an RFC 3339 time with an offset, kept as UTC.",
    )
    scheduled_at: Annotated[datetime, AfterValidator(_aware_utc)] | None = Field(
        default=None,
        exclude_if=_is_none,
        description=(
            "Set on a job a schedule enqueued: the tick it was enqueued for (UTC), "
            "which may be earlier than when it ran. Absent on other jobs."
        ),
    )
    expires_at: Annotated[datetime, AfterValidator(_aware_utc)] | None = Field(
        default=None,
        exclude_if=_is_none,
        description=(
            "A job not started by this time (UTC) is never run: it is parked with "
            "reason `expired`. Applies to every attempt. Absent: no deadline."
        ),
    )
    priority: int | None = Field(
        default=None,
        ge=0,
        le=MAX_PRIORITY,
        exclude_if=_is_none,
        description=(
            "0 (the default) to 9: a queued job with a higher priority is handed out "
            "first, on queues declared with priorities (docs/controls.md). Absent: 0."
        ),
    )
    partition_key: Name | None = Field(
        default=None,
        exclude_if=_is_none,
        description=(
            "Jobs with the same key (and queue) run one at a time, in the order they "
            "were enqueued, across every worker (docs/controls.md)."
        ),
    )
    unique_key: Name | None = Field(
        default=None,
        exclude_if=_is_none,
        description=(
            "While a job with this key is queued, delayed or running (and at most "
            "`unique_for_s`), another enqueue with the same key is refused."
        ),
    )
    unique_for_s: float | None = Field(
        default=None,
        gt=0,
        exclude_if=_is_none,
        description=(
            "The longest the `unique_key` lock is held (seconds), even if the job never "
            "finishes. Absent: the worker's default."
        ),
    )

    chain: ChainLink | None = Field(
        default=None,
        exclude_if=_is_none,
        description="Set on a step of a chain: the chain, this step, and the steps after it.",
    )
    group: GroupMember | None = Field(
        default=None,
        exclude_if=_is_none,
        description="Set on a member of a group: the group and this member's place in it.",
    )

    def to_json(self) -> bytes:
        """Serialise to the UTF-8 JSON wire format, unknown fields included."""
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> Job:
        """Parse and validate the wire format; raise ``ValidationError`` if it is not a job."""
        return cls.model_validate_json(data)


#: The most members one group may have: its completion check holds one marker per member.
MAX_GROUP_SIZE = 100_000


class GroupMember(BaseModel):
    """A job's place in a group (``Job.group``): which group, which member, of how many."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: QueueName = Field(description="The group's id.")
    index: int = Field(ge=0, lt=MAX_GROUP_SIZE, description="This member's place, from 0.")
    size: int = Field(ge=1, le=MAX_GROUP_SIZE, description="How many members the group has.")


class ChainLink(BaseModel):
    """A job's place in a chain (``Job.chain``): the steps after it travel with it.

    When the job succeeds, the worker enqueues ``next[0]`` carrying the rest,
    with this job's return value in its args under ``result_into`` if that is set.
    Nothing about the chain is kept anywhere else.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Name = Field(description="The chain's id.")
    step: int = Field(ge=0, description="This job's place in the chain, from 0.")
    steps: int = Field(ge=1, description="How many steps the chain has.")
    next: list[Job] = Field(default_factory=list, description="The steps after this one.")
    result_into: Name | None = Field(
        default=None,
        exclude_if=_is_none,
        description="The args key each next step receives the previous step's result under.",
    )


Job.model_rebuild()

_set = object.__setattr__


def stamped(job: Job, enqueued_at: datetime) -> Job:
    """A copy of ``job`` with ``enqueued_at`` set; ``job`` is left as it is.

    What ``job.model_copy(update={"enqueued_at": enqueued_at})`` gives, at
    half the cost: every enqueue makes this copy. Nothing is validated again:
    ``job`` was validated when it was built, and ``enqueued_at`` must be a
    timezone-aware UTC datetime (the caller's clock).
    """
    cls = type(job)
    copy = cls.__new__(cls)
    _set(copy, "__dict__", {**job.__dict__, "enqueued_at": enqueued_at})
    extra = job.__pydantic_extra__
    _set(copy, "__pydantic_extra__", None if extra is None else dict(extra))
    _set(copy, "__pydantic_fields_set__", job.__pydantic_fields_set__ | {"enqueued_at"})
    private = job.__pydantic_private__
    if private is not None:  # as pydantic's own copy: unset private attributes stay unset
        private = {key: value for key, value in private.items() if value is not PydanticUndefined}
    _set(copy, "__pydantic_private__", private)
    return copy


def job_schema_json() -> str:
    """The published JSON Schema of the wire format, as committed in ``docs/job.schema.json``."""
    import json

    return json.dumps(job_schema(), indent=2, sort_keys=True) + "\n"


def job_schema() -> dict[str, Any]:
    """The JSON Schema of a job, with the job itself at the root.

    ``Job`` is recursive (a chain's next steps are jobs), so pydantic puts it
    under ``$defs`` behind a ``$ref``; other languages' validators read the
    root more easily, so it is moved there and its self-references become ``#``.
    """
    schema = Job.model_json_schema(mode="serialization")
    definitions = dict(schema.pop("$defs", {}))
    root = definitions.pop("Job", None)
    if root is None:
        return schema

    def point_home(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("$ref") == "#/$defs/Job":
                return {**node, "$ref": "#"}
            return {key: point_home(value) for key, value in node.items()}
        if isinstance(node, list):
            return [point_home(item) for item in node]
        return node

    whole: dict[str, Any] = point_home(root)
    if definitions:
        whole["$defs"] = point_home(definitions)
    return whole
