"""Searching and paging failed jobs: pure functions of a list of :class:`FailedJob`.

A query's fields all have to match (AND); an empty field matches anything.
``handler``, ``reason``, ``queue`` and ``id`` match exactly; ``text`` is a
case-insensitive substring of the error, the traceback or the args (as JSON).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from urllib.parse import urlencode

from amqp_worker._core.failures import FailedJob

__all__ = ["FailedQuery", "Page", "page_of", "search_text"]


@dataclass(frozen=True, slots=True)
class FailedQuery:
    """What the failed-jobs table is filtered by."""

    queue: str = ""
    handler: str = ""
    reason: str = ""
    id: str = ""
    text: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FailedQuery:
        """The query in a request's parameters (unknown ones ignored, values stripped)."""
        return cls(**{f.name: str(params.get(f.name, "")).strip()[:500] for f in fields(cls)})

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def params(self) -> dict[str, str]:
        """The non-empty fields, as request parameters."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def urlencoded(self) -> str:
        return urlencode(self.params())

    def describe(self) -> str:
        """``handler=send_email, text="timeout"``; "all failed jobs" for an empty query."""
        parts = [f"{k}={v!r}" if k == "text" else f"{k}={v}" for k, v in self.params().items()]
        return ", ".join(parts) if parts else "all failed jobs"

    def matches(self, record: FailedJob) -> bool:
        if self.queue and record.queue != self.queue:
            return False
        if self.handler and record.handler != self.handler:
            return False
        if self.reason and record.reason.value != self.reason:
            return False
        if self.id and record.id != self.id:
            return False
        return not self.text or self.text.casefold() in search_text(record)


def search_text(record: FailedJob) -> str:
    """What ``text`` searches in: error type and message, traceback, each attempt's error, args."""
    parts = [record.error_type, record.error_message, record.traceback]
    for attempt in record.history:
        parts.append(attempt.error_type)
        parts.append(attempt.error_message)
    if record.job is not None:
        parts.append(json.dumps(record.job.args, ensure_ascii=False, default=str))
    else:
        parts.append(record.body.decode("utf-8", "replace"))
    return "\n".join(parts).casefold()


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items, and where it sits in the whole."""

    items: Sequence[FailedJob]
    number: int
    """1-based."""
    size: int
    total: int | None
    """How many there are in all; None when only the first pages were read."""

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        if self.total is None:
            return len(self.items) == self.size
        return self.number * self.size < self.total

    @property
    def first_index(self) -> int:
        """1-based position of the first item (0 on an empty page)."""
        return (self.number - 1) * self.size + 1 if self.items else 0


def page_of(records: Sequence[FailedJob], number: int, size: int, total: int | None) -> Page:
    """Page ``number`` (1-based, clamped to at least 1) of ``records``."""
    number = max(1, number)
    start = (number - 1) * size
    return Page(records[start : start + size], number, size, total)
