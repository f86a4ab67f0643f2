"""What a re-published job keeps of its headers, and what the connection-loss rule accepts."""

from __future__ import annotations

import aiormq.exceptions as amqp_errors
import pytest

from amqp_worker._core.failures import HISTORY_HEADER, AttemptRecord
from amqp_worker._rabbitmq.connect import connection_lost
from amqp_worker._rabbitmq.messages import (
    ATTEMPT_HEADER,
    DUE_HEADER,
    carried_headers,
    retry_headers,
)

RECEIVED = {
    "x-death": [{"count": 1}],
    "x-first-death-queue": "q",
    "x-last-death-reason": "expired",
    ATTEMPT_HEADER: 2,
    DUE_HEADER: 1_700_000_000_000,
    "aw-delay-3": 1,
    HISTORY_HEADER: [{"attempt": 0}],
    "aw-failure-reason": "handler_error",
    "traceparent": "00-abc-def-01",
    "tenant": b"acme",
}


def test_a_retry_keeps_the_users_headers_and_its_failure_record_only() -> None:
    assert carried_headers(RECEIVED) == {
        HISTORY_HEADER: [{"attempt": 0}],
        "aw-failure-reason": "handler_error",
        "traceparent": "00-abc-def-01",
        "tenant": "acme",  # bytes cannot be published back: decoded
    }


def test_a_fresh_start_drops_every_amqp_worker_header() -> None:
    assert carried_headers(RECEIVED, fresh_start=True) == {
        "traceparent": "00-abc-def-01",
        "tenant": "acme",
    }


def test_retry_headers_replace_the_history() -> None:
    record = AttemptRecord.of(2, ValueError("boom"))
    headers = retry_headers(RECEIVED, [record])
    assert [entry["attempt"] for entry in headers[HISTORY_HEADER]] == [2]
    assert ATTEMPT_HEADER not in headers
    assert not any(key.startswith("x-") for key in headers)


def test_no_headers_carry_nothing() -> None:
    assert carried_headers(None) == {}


@pytest.mark.parametrize(
    "exc",
    [
        amqp_errors.ChannelInvalidStateError("closed"),
        amqp_errors.ConnectionClosed(320, "shutdown"),
        ConnectionResetError(),
        RuntimeError("Connection was not opened"),
        RuntimeError("<Connection: amqp://127.0.0.1> closed"),
        RuntimeError("<RobustConnection: amqp://127.0.0.1> connection closed"),
        RuntimeError("Can't initialize closed channel"),
    ],
)
def test_a_lost_connection_is_recognised(exc: BaseException) -> None:
    assert connection_lost(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("dictionary changed size during iteration"),
        RuntimeError("Event loop is closed"),
        ValueError("Connection closed"),
        KeyError("x"),
    ],
)
def test_a_bug_is_not_mistaken_for_a_lost_connection(exc: BaseException) -> None:
    assert not connection_lost(exc)


def test_headers_this_client_cannot_encode_are_left_behind_by_name() -> None:
    from pamqp import encode

    from amqp_worker._rabbitmq.messages import DROPPED_HEADER

    received = {
        "huge-int": 2**64,  # beyond 64 bits, as a hostile publisher may send
        "huge-float": 1e300,  # a 64-bit float out of this client's 32-bit range
        "nested": {"raw": b"\xff\xfe", "list": [b"\x80", 1]},  # non-UTF-8 at depth
        "ok": 7,
        DROPPED_HEADER: ["earlier"],
    }
    carried = carried_headers(received)
    assert carried["nested"] == {"raw": "\ufffd\ufffd", "list": ["\ufffd", 1]}
    assert carried["ok"] == 7
    assert carried[DROPPED_HEADER] == ["earlier", "huge-int", "huge-float"]
    encode.field_table(carried)  # everything left encodes


def test_a_plain_copy_keeps_the_body_and_drops_what_cannot_encode() -> None:
    from aio_pika import Message
    from pamqp import encode

    from amqp_worker._rabbitmq.messages import plain_copy

    message = Message(b"not json", message_id="x" * 10_000, headers={"a": 1})
    copy = plain_copy(message)
    assert copy.body == b"not json"
    assert copy.message_id is None
    assert copy.headers == {"a": 1}
    encode.field_table(dict(copy.headers))
