"""Job messages and failure records: pure functions, no broker."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime

from aio_pika import DeliveryMode

from amqp_worker import Job
from amqp_worker.failures import MAX_TRACEBACK_CHARS, FailureReason, failure_headers
from amqp_worker.messages import job_message, strip_death_headers


def test_job_message_properties() -> None:
    job = Job(handler="send", queue="q", args={"a": 1}, attempt=2)
    msg = job_message(job, due_ms=123, headers={"aw-delay-0": "1"})
    assert Job.from_json(msg.body) == job
    assert msg.content_type == "application/json"
    assert msg.delivery_mode == DeliveryMode.PERSISTENT
    assert msg.message_id == job.id
    assert msg.type == "send"
    assert msg.headers == {"aw-attempt": 2, "aw-due-ms": 123, "aw-delay-0": "1"}


def test_strip_death_headers() -> None:
    headers = {
        "x-death": [{"count": 1}],
        "x-first-death-queue": "q",
        "x-first-death-reason": "expired",
        "x-last-death-exchange": "e",
        "aw-attempt": 1,
        "x-custom": "kept",
    }
    assert strip_death_headers(headers) == {"aw-attempt": 1, "x-custom": "kept"}
    assert strip_death_headers(None) == {}


def test_failure_headers_carry_the_error_and_a_truncated_traceback() -> None:
    # Two functions calling each other: Python folds a frame repeated in a row
    # ("[Previous line repeated N more times]"), not alternating ones, so the
    # traceback really is longer than the limit.
    def ping(n: int) -> None:
        if n == 0:
            raise ValueError("x" * 5000)
        pong(n - 1)

    def pong(n: int) -> None:
        ping(n - 1)

    try:
        ping(200)
    except ValueError as exc:
        error = exc
    full = "".join(traceback.format_exception(error))
    assert len(full) > MAX_TRACEBACK_CHARS
    now = datetime(2026, 1, 1, tzinfo=UTC)
    headers = failure_headers(FailureReason.HANDLER_ERROR, "q", error, now=now)
    assert headers["aw-failure-reason"] == "handler_error"
    assert headers["aw-queue"] == "q"
    assert headers["aw-failed-at"] == "2026-01-01T00:00:00+00:00"
    assert headers["aw-error-type"] == "builtins.ValueError"
    assert len(headers["aw-error-message"]) < 1100
    kept = headers["aw-traceback"]
    assert MAX_TRACEBACK_CHARS <= len(kept) <= MAX_TRACEBACK_CHARS + 30
    assert kept.startswith("...(truncated)...")
    # The end, where it raised, is kept; the start, where it was called, is not.
    assert kept.endswith(full[-MAX_TRACEBACK_CHARS // 2 :])
    assert 'raise ValueError("x" * 5000)' in kept
    assert "in test_failure_headers_carry_the_error_and_a_truncated_traceback" in full
    assert "in test_failure_headers_carry_the_error_and_a_truncated_traceback" not in kept


def test_failure_headers_without_an_exception() -> None:
    headers = failure_headers(FailureReason.INVALID_JSON, "q")
    assert headers["aw-failure-reason"] == "invalid_json"
    assert "aw-error-type" not in headers
