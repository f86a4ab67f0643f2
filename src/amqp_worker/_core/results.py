"""Job results: the record a finished job leaves, and the handle that waits for it.

A handler registered with ``result=True`` leaves a :class:`JobResult` when its
job finishes: ``succeeded`` with the return value as JSON, or ``failed`` with
the reason once the job is parked. ``await worker.perform(job)`` returns a
:class:`JobHandle`, a ``str`` (the job id, as before) whose
:meth:`JobHandle.result` waits for that record; ``worker.handle(job_id)``
makes one from an id alone, in any process. Where records are kept and for
how long is the worker's business (``result_ttl_s``; ``docs/workflows.md``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter
from pydantic_core import PydanticSerializationError, to_jsonable_python

from amqp_worker.errors import InvalidResult, JobFailed

from .defaults import DEFAULT_RESULT_WAIT_S
from .job import Job

__all__ = ["JobHandle", "JobResult", "ResultSource", "result_json"]

T = TypeVar("T")


class JobResult(BaseModel):
    """What a finished job left: its return value, or why it was parked (the wire record)."""

    model_config = ConfigDict(frozen=True)

    job_id: str = Field(description="The job's id.")
    handler: str = Field(description="The handler that ran it.")
    queue: str = Field(description="The job's queue.")
    status: Literal["succeeded", "failed"] = Field(description="How the job ended.")
    value: JsonValue = Field(default=None, description="The handler's return value (succeeded).")
    reason: str | None = Field(default=None, description="The failure reason (failed).")
    error: str | None = Field(default=None, description="The last error, one line (failed).")
    finished_at: datetime = Field(description="When the job finished (UTC).")

    @classmethod
    def succeeded(cls, job: Job, queue: str, value: JsonValue, now: datetime) -> JobResult:
        """The record of ``job`` succeeding with ``value`` (JSON already)."""
        return cls(
            job_id=job.id,
            handler=job.handler,
            queue=queue,
            status="succeeded",
            value=value,
            finished_at=now,
        )

    @classmethod
    def failed(
        cls, job: Job, queue: str, reason: str, error: BaseException, now: datetime
    ) -> JobResult:
        """The record of ``job`` parked for ``reason`` after ``error``."""
        text = f"{type(error).__name__}: {error}".splitlines()[0][:1000]
        return cls(
            job_id=job.id,
            handler=job.handler,
            queue=queue,
            status="failed",
            reason=reason,
            error=text,
            finished_at=now,
        )

    def to_json(self) -> bytes:
        """The UTF-8 JSON the record travels as."""
        return self.model_dump_json().encode("utf-8")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite(item) for item in value)
    return True


def result_json(
    value: Any, adapter: TypeAdapter[Any] | None, max_bytes: int, job_id: str
) -> JsonValue:
    """``value`` as a JSON value, serialised by the handler's return annotation (``adapter``).

    Raises :class:`~amqp_worker.errors.InvalidResult` if it is not JSON
    (bytes, a set, an object, NaN) or its JSON is over ``max_bytes``.
    """
    try:
        plain = (
            adapter.dump_python(value, mode="json")
            if adapter is not None
            else to_jsonable_python(value)
        )
        if not _finite(plain):
            raise ValueError("NaN or Infinity, which JSON cannot represent")
        size = len(json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode())
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        raise InvalidResult(
            f"job {job_id} returned a {type(value).__name__} that is not JSON: {exc}"
        ) from None
    if size > max_bytes:
        raise InvalidResult(
            f"job {job_id} returned {size} bytes of JSON, over max_message_bytes={max_bytes}: "
            "return a reference (a URL, a database key) instead of the data"
        )
    return plain  # type: ignore[no-any-return]


class ResultSource(Protocol):
    """Where a worker's :class:`JobHandle` finds results."""

    async def wait_result(self, job_id: str, timeout_s: float, since: datetime | None) -> JobResult:
        """The record of ``job_id``, waiting up to ``timeout_s``; ``since``: not before then.

        Raises :class:`~amqp_worker.errors.ResultTimeout` if none comes in time.
        """
        ...


class JobHandle(str):
    """A job's id (it *is* that ``str``) that can also wait for the job's result.

    Equal to, and hashed as, the plain id: code that kept ids keeps working.
    """

    _source: ResultSource
    _since: datetime | None

    def __new__(cls, job_id: str, source: ResultSource, since: datetime | None = None) -> JobHandle:
        handle = super().__new__(cls, job_id)
        handle._source = source
        handle._since = since
        return handle

    @property
    def id(self) -> str:
        """The job id, as a plain ``str``."""
        return str.__str__(self)

    async def outcome(self, timeout_s: float = DEFAULT_RESULT_WAIT_S) -> JobResult:
        """The job's :class:`JobResult`, succeeded or failed, waiting up to ``timeout_s``.

        Raises :class:`~amqp_worker.errors.ResultTimeout` if none arrives in
        time: the job has not finished, its handler does not keep results
        (``result=True``), or the record expired (``result_ttl_s``).
        """
        return await self._source.wait_result(self.id, timeout_s, self._since)

    @overload
    async def result(self, timeout_s: float = ..., *, model: None = None) -> JsonValue: ...

    @overload
    async def result(self, timeout_s: float = ..., *, model: type[T]) -> T: ...

    async def result(
        self, timeout_s: float = DEFAULT_RESULT_WAIT_S, *, model: type[Any] | None = None
    ) -> Any:
        """The handler's return value, as JSON or validated into ``model``.

        Raises :class:`~amqp_worker.errors.JobFailed` (with the failure record)
        if the job was parked, and :class:`~amqp_worker.errors.ResultTimeout`
        as :meth:`outcome` does.
        """
        record = await self.outcome(timeout_s)
        if record.status == "failed":
            raise JobFailed(record)
        if model is None:
            return record.value
        return TypeAdapter(model).validate_python(record.value)
