"""Names and arguments of the limit, token, leader, key lane and key window queues."""

from __future__ import annotations

import pytest

from amqp_worker._core.limits import KEY_LANES, Limits
from amqp_worker._rabbitmq.extra_topology import (
    KEY_WINDOW_EXPIRES_MIN_MS,
    key_lane_queue,
    key_window_arguments,
    key_window_queue,
    leader_queue,
    leader_queue_arguments,
    limit_queue,
    limit_queue_arguments,
    limit_queue_names,
    limited_queues,
    token_queue,
    token_queue_arguments,
)
from amqp_worker._rabbitmq.topology import Topology

TOPOLOGY = Topology(name="app")


def limits(**options: object) -> Limits:
    made = Limits.of(
        options.get("rate"),  # type: ignore[arg-type]
        options.get("burst"),  # type: ignore[arg-type]
        options.get("concurrency"),  # type: ignore[arg-type]
        options.get("limit_key"),  # type: ignore[arg-type]
    )
    assert made is not None
    return made


def test_limit_queue_names_per_kind_of_limit() -> None:
    assert limit_queue_names(TOPOLOGY, "q", "h", limits(rate="5/s")) == [
        limit_queue(TOPOLOGY, "q", "h")
    ]
    assert limit_queue(TOPOLOGY, "q", "h") == "app.limit.q.h"
    lanes = limit_queue_names(TOPOLOGY, "q", "h", limits(concurrency=3))
    assert lanes == ["app.limit.q.h.0", "app.limit.q.h.1", "app.limit.q.h.2"]
    keyed = limit_queue_names(TOPOLOGY, "q", "h", limits(concurrency=3, limit_key="t"))
    assert len(keyed) == KEY_LANES
    assert keyed[0] == key_lane_queue(TOPOLOGY, "q", "h", 0) == "app.limit.q.h.k0"


def test_limited_queues_lists_every_queue_a_limited_handler_may_have_declared() -> None:
    limited = {"a": limits(rate="5/s"), "b": limits(concurrency=2)}
    assert limited_queues(TOPOLOGY, iter(["q", "r"]), limited) == [
        "app.limit.q.a",
        "app.limit.r.a",
        "app.tokens.a",
        "app.tokens.a.leader",
        "app.limit.q.b.0",
        "app.limit.q.b.1",
        "app.limit.r.b.0",
        "app.limit.r.b.1",
        "app.tokens.b",  # declared or not: a missing queue is skipped on delete
        "app.tokens.b.leader",
    ]
    assert limited_queues(TOPOLOGY, ["q"], {}) == []


def test_limit_queues_are_quorum_and_dead_letter_to_the_failed_jobs() -> None:
    lane = limit_queue_arguments(TOPOLOGY, "q", 5, lane=True)
    plain = limit_queue_arguments(TOPOLOGY, "q", 5, lane=False)
    for arguments in (lane, plain):
        assert arguments["x-queue-type"] == "quorum"
        assert arguments["x-delivery-limit"] == 5
        assert arguments["x-dead-letter-routing-key"] == TOPOLOGY.failed_queue("q")
        assert "x-expires" not in arguments
    assert lane["x-single-active-consumer"] is True
    assert "x-single-active-consumer" not in plain


def test_token_and_leader_queues() -> None:
    assert token_queue(TOPOLOGY, "h") == "app.tokens.h"
    assert leader_queue(TOPOLOGY, "h") == "app.tokens.h.leader"
    assert token_queue_arguments(7) == {
        "x-queue-type": "quorum",
        "x-max-length": 7,
        "x-overflow": "drop-head",
    }
    assert leader_queue_arguments() == {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-max-length": 1,
        "x-overflow": "reject-publish",
    }


def test_key_windows_are_named_by_rate_and_a_hash_of_the_key() -> None:
    one = key_window_queue(TOPOLOGY, "h", "tenant-1", 10, 60.0)
    assert one.startswith("app.keyrate.h.10per60000ms.")
    assert len(one.rsplit(".", 1)[1]) == 32
    assert one != key_window_queue(TOPOLOGY, "h", "tenant-2", 10, 60.0)
    assert one != key_window_queue(TOPOLOGY, "h", "tenant-1", 20, 60.0)
    # Any key, however long or odd, makes a legal name.
    assert len(key_window_queue(TOPOLOGY, "h", "x" * 10_000, 1, 1.0)) < 255


@pytest.mark.parametrize(
    ("window_s", "expires_ms"), [(1.0, KEY_WINDOW_EXPIRES_MIN_MS), (3600.0, 7_200_000)]
)
def test_key_window_arguments(window_s: float, expires_ms: int) -> None:
    arguments = key_window_arguments(4, window_s)
    assert arguments == {
        "x-queue-type": "classic",
        "x-max-length": 4,
        "x-overflow": "reject-publish",
        "x-message-ttl": int(window_s * 1000),
        "x-expires": expires_ms,
    }
    # The queue never expires under a live marker.
    assert arguments["x-expires"] > arguments["x-message-ttl"]
