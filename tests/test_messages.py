"""Job messages and failure records: pure functions, no broker."""

from __future__ import annotations

import struct
import traceback
from datetime import UTC, datetime

import pytest
from aio_pika import DeliveryMode
from aio_pika.message import decode_timestamp
from pamqp import commands, decode, frame, header

from amqp_worker import Job
from amqp_worker.failures import MAX_TRACEBACK_CHARS, FailedJob, FailureReason, failure_headers
from amqp_worker.messages import job_message, strip_death_headers, tolerate_undecodable_properties


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


# -- properties and headers RabbitMQ relays that the AMQP client could not read ------


def _table(*entries: bytes) -> bytes:
    raw = b"".join(entries)
    return struct.pack(">I", len(raw)) + raw


def _entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    return struct.pack("B", len(name)) + name + kind + value


def test_short_strings_that_are_not_utf8_decode_with_replacement_characters() -> None:
    assert decode.by_type(b"\x03id\xff", "shortstr") == (4, "id\ufffd")
    assert decode.by_type(b"\x02ok", "shortstr") == (3, "ok")  # valid text: as before


def test_timestamps_no_datetime_can_hold_decode_as_none() -> None:
    assert decode.by_type(struct.pack(">Q", 2**63 - 1), "timestamp") == (8, None)
    at = datetime(2030, 1, 2, tzinfo=UTC)
    assert decode.by_type(struct.pack(">Q", int(at.timestamp())), "timestamp") == (8, at)
    with pytest.raises(ValueError, match="timestamp"):
        decode.by_type(b"\x00\x01", "timestamp")  # truncated: still an error


def test_header_tables_keep_every_entry_whatever_its_name_or_time() -> None:
    raw = _table(
        _entry(b"\xff\xfea", b"I", struct.pack(">i", 5)),
        _entry(b"ts", b"T", struct.pack(">Q", 2**63 - 1)),
        _entry(b"deep", b"F", _table(_entry(b"\xc3", b"T", struct.pack(">Q", 2**64 - 1)))),
        _entry(b"ok", b"S", struct.pack(">I", 2) + b"hi"),
    )
    assert decode.by_type(raw, "table") == (
        len(raw),
        {"\ufffd\ufffda": 5, "ts": None, "deep": {"\ufffd": None}, "ok": "hi"},
    )
    with pytest.raises(ValueError, match="exceeds"):
        decode.by_type(raw[:-3], "table")  # cut short: still an error


def test_a_content_header_another_client_wrote_decodes_instead_of_closing_the_connection() -> None:
    at = datetime(2001, 2, 3, tzinfo=UTC)
    properties = commands.Basic.Properties(
        message_id="AA", message_type="BB", timestamp=at, headers={"CC": 1}
    )
    frame_bytes = frame.marshal(header.ContentHeader(0, 10, properties), 1)
    for good, bad in (
        (b"\x02AA", b"\x02\xff\xfe"),
        (b"\x02BB", b"\x02\xc3("),
        (b"\x02CC", b"\x02\xed\xa0"),
        (struct.pack(">Q", int(at.timestamp())), struct.pack(">Q", 2**63 - 1)),
    ):
        assert frame_bytes.count(good) == 1
        frame_bytes = frame_bytes.replace(good, bad)
    _, _, decoded = frame.unmarshal(frame_bytes)
    assert isinstance(decoded, header.ContentHeader)
    assert decoded.properties.message_id == "\ufffd\ufffd"
    assert decoded.properties.message_type == "\ufffd("
    assert decoded.properties.timestamp is None
    assert decoded.properties.headers == {"\ufffd\ufffd": 1}
    # aio-pika makes its incoming message of these without complaint.
    assert decode_timestamp(decoded.properties.timestamp) is None


def test_tolerant_decoding_is_idempotent() -> None:
    tolerate_undecodable_properties()
    tolerate_undecodable_properties()
    assert decode.by_type(b"\x01\xff", "shortstr") == (2, "\ufffd")


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
