"""What a re-published job keeps of its headers, and what the connection-loss rule accepts."""

from __future__ import annotations

import aiormq.exceptions as amqp_errors
import pytest

from amqp_worker.connect import connection_lost
from amqp_worker.failures import HISTORY_HEADER, AttemptRecord
from amqp_worker.messages import ATTEMPT_HEADER, DUE_HEADER, carried_headers, retry_headers

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
