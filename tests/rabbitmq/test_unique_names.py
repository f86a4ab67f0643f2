"""Lock queue names, arguments and tokens of unique jobs: pure, no broker."""

from __future__ import annotations

import hashlib

import pytest

from amqp_worker._core.job import MAX_NAME_BYTES, QUEUE_NAME_CHARS
from amqp_worker._core.unique import MAX_UNIQUE_FOR_S
from amqp_worker._rabbitmq.unique_names import (
    LOCK_QUEUE_EXPIRES_MS,
    lock_queue,
    lock_queue_arguments,
    token_body,
    token_holder,
    token_ttl_ms,
)


def test_a_plain_key_names_its_queue_as_it_is() -> None:
    assert lock_queue("myapp", "report:7") == "myapp.unique.k.report:7"


@pytest.mark.parametrize("key", ["x" * 300, "naïve key", "a*b", "tab\there", "ключ"])
def test_a_key_a_queue_name_cannot_hold_is_hashed(key: str) -> None:
    name = lock_queue("myapp", key)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert name == f"myapp.unique.h.{digest}"
    assert QUEUE_NAME_CHARS.fullmatch(name)
    assert len(name.encode()) <= MAX_NAME_BYTES


def test_the_longest_plain_key_is_kept_and_one_more_byte_is_hashed() -> None:
    room = MAX_NAME_BYTES - len("myapp.unique.k.")
    assert lock_queue("myapp", "k" * room) == "myapp.unique.k." + "k" * room
    assert lock_queue("myapp", "k" * (room + 1)).startswith("myapp.unique.h.")


def test_no_plain_key_can_name_a_hashed_queue() -> None:
    digest = hashlib.sha256(b"a*b").hexdigest()
    # A key that spells the hashed form lands under "k.", never "h.".
    assert lock_queue("myapp", f"h.{digest}") != lock_queue("myapp", "a*b")


def test_keys_are_scoped_by_worker_name() -> None:
    assert lock_queue("one", "k") != lock_queue("two", "k")


def test_a_worker_name_too_long_for_lock_queues_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        lock_queue("n" * 250, "a*b")


def test_lock_queues_hold_one_token_and_refuse_a_second() -> None:
    assert lock_queue_arguments() == {
        "x-queue-type": "classic",
        "x-max-length": 1,
        "x-overflow": "reject-publish",
        "x-expires": LOCK_QUEUE_EXPIRES_MS,
    }


def test_a_lock_queue_outlives_any_token() -> None:
    assert token_ttl_ms(MAX_UNIQUE_FOR_S) < LOCK_QUEUE_EXPIRES_MS
    assert LOCK_QUEUE_EXPIRES_MS < 2**32  # RabbitMQ's bound on x-expires


@pytest.mark.parametrize(
    ("window_s", "ttl_ms"), [(0.0001, 1), (1.5, 1500), (1.0004, 1001), (3600, 3_600_000)]
)
def test_the_token_lives_for_the_window_rounded_up(window_s: float, ttl_ms: int) -> None:
    assert token_ttl_ms(window_s) == ttl_ms


def test_a_token_names_its_holder() -> None:
    assert token_holder(token_body("k", "job-1")) == "job-1"


@pytest.mark.parametrize("body", [b"", b"nope", b"[]", b'{"job_id": 7}', b'{"key": "k"}'])
def test_anything_else_names_no_holder(body: bytes) -> None:
    assert token_holder(body) is None
