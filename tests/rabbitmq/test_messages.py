"""Job messages and failure records: pure functions, no broker."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime

from aio_pika import DeliveryMode

from amqp_worker import Job
from amqp_worker._core.failures import (
    MAX_TRACEBACK_CHARS,
    FailedJob,
    FailureReason,
    failure_headers,
)
from amqp_worker._rabbitmq.messages import job_message, strip_death_headers


def test_job_message_properties() -> None:
    job = Job(handler="send", queue="q", args={"a": 1}, attempt=2)
    msg = job_message(job, due_ms=123, headers={"aw-delay-0": "1"})
    assert Job.from_json(msg.body) == job
    assert msg.properties.content_type == "application/json"
    assert msg.properties.delivery_mode == DeliveryMode.PERSISTENT
    assert msg.message_id == msg.properties.message_id == job.id
    assert msg.properties.message_type == "send"
    assert msg.properties.timestamp == job.enqueued_at
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


def test_a_parked_job_whose_body_names_no_id_keeps_one_id_on_every_read() -> None:
    body = b'{"handler": "gone", "args": {"a": 1}}'  # a publisher may leave the id out
    # The worker parks it with the id it ran under (its logs, its hooks) as the message id.
    reads = [FailedJob.from_message(body, {}, "the-id-it-ran-under", "q") for _ in range(2)]
    assert [read.id for read in reads] == ["the-id-it-ran-under"] * 2
    assert reads[0].job is not None
    assert reads[0].job.id == "the-id-it-ran-under"  # a retry keeps it too
    # Parked by something else, without a usable message id: derived from the body.
    for message_id in (None, "", "bad\x00id"):
        ids = {FailedJob.from_message(body, {}, message_id, "q").id for _ in range(2)}
        assert len(ids) == 1
    other = FailedJob.from_message(body + b" ", {}, None, "q")
    assert other.id not in ids
    # A body that names its id keeps it, whatever the message id says.
    named = b'{"handler": "gone", "id": "mine"}'
    assert FailedJob.from_message(named, {}, "other", "q").id == "mine"
