"""Topology names and arguments: pure functions, no broker."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqp_worker._core.controls import partition_of
from amqp_worker._rabbitmq.extra_topology import (
    group_queue_arguments,
    partition_queue,
    partition_queue_arguments,
)
from amqp_worker._rabbitmq.topology import (
    DELAY_RADIX,
    ONE_YEAR_MS,
    DelayPlan,
    Topology,
    queue_arguments,
)


def test_default_names() -> None:
    t = Topology()
    assert t.exchange == "amqp_worker"
    assert t.work_queue("default") == "default"
    assert t.failed_queue("default") == "amqp_worker.failed.default"
    assert t.due_queue("default") == "amqp_worker.due.default"
    assert t.quarantine_queue("default") == "amqp_worker.quarantine.default"
    assert t.due_exchange == "amqp_worker.due"


def test_prefix_and_dotted_names_are_kept_verbatim() -> None:
    t = Topology(name="shop.jobs", queue_prefix="eu.")
    assert t.work_queue("billing.invoices") == "eu.billing.invoices"
    assert t.failed_queue("billing.invoices") == "shop.jobs.failed.eu.billing.invoices"
    assert t.quarantine_queue("billing.invoices") == "shop.jobs.quarantine.eu.billing.invoices"


def test_names_over_255_bytes_are_refused() -> None:
    t = Topology(queue_prefix="p" * 200)
    with pytest.raises(ValueError, match="255"):
        t.work_queue("q" * 60)
    with pytest.raises(ValueError, match="255"):
        t.failed_queue("q" * 40)


def test_classic_queues_have_no_arguments_and_never_expire() -> None:
    assert queue_arguments("classic") == {}
    t = Topology()
    assert t.work_queue_arguments("q") == {}
    assert t.failed_queue_arguments() == {}
    for level in range(t.delay.levels):
        for digit in range(1, DELAY_RADIX):
            assert "x-expires" not in t.delay_queue_arguments(level, digit)


def test_max_priority_sets_x_max_priority_on_classic_job_queues_only() -> None:
    assert Topology(max_priority=9).work_queue_arguments("q") == {"x-max-priority": 9}
    assert Topology(max_priority=9).failed_queue_arguments() == {}
    quorum = Topology(queue_type="quorum", max_priority=9).work_queue_arguments("q")
    assert "x-max-priority" not in quorum  # 4.x quorum queues have their own two levels
    for level in range(Topology().delay.levels):
        assert "x-max-priority" not in Topology(max_priority=9).delay_queue_arguments(level, 1)


def test_quorum_arguments() -> None:
    assert queue_arguments("quorum") == {"x-queue-type": "quorum"}
    args = Topology(queue_type="quorum").delay_queue_arguments(0, 1)
    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    assert "x-expires" not in args


def test_quorum_job_queues_have_a_delivery_limit_and_dead_letter_into_the_failed_queue() -> None:
    t = Topology(name="app", queue_type="quorum", delivery_limit=7)
    assert t.work_queue_arguments("emails") == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "app.failed.emails",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    # Reads of parked jobs count as deliveries: the failed queue's limit is out of reach.
    assert t.failed_queue_arguments()["x-delivery-limit"] >= 2**31 - 1
    assert "x-dead-letter-exchange" not in t.failed_queue_arguments()
    assert Topology().delivery_limit == 1000


def test_delay_queues_dead_letter_one_level_down_then_to_the_due_exchange() -> None:
    t = Topology()
    assert t.delay_queue_arguments(0, 2)["x-dead-letter-exchange"] == t.due_exchange
    assert t.delay_queue_arguments(3, 1)["x-dead-letter-exchange"] == t.delay_exchange(2)
    assert t.delay_queue_arguments(3, 1)["x-message-ttl"] == 1 * 4**3 * t.delay.unit_ms
    assert "x-dead-letter-routing-key" not in t.delay_queue_arguments(3, 1)


def test_delay_bindings_send_zero_digits_down_a_level() -> None:
    t = Topology()
    bindings = {b.destination: b for b in t.delay_bindings(2)}
    assert bindings[t.delay_exchange(1)].kind == "exchange"
    assert bindings[t.delay_exchange(1)].arguments == {"x-match": "all", "aw-delay-2": "0"}
    assert bindings[t.delay_queue(2, 3)].kind == "queue"
    assert bindings[t.delay_queue(2, 3)].arguments == {"x-match": "all", "aw-delay-2": "3"}
    bottom = {b.destination: b for b in t.delay_bindings(0)}
    assert bottom[t.due_exchange].arguments == {"x-match": "all", "aw-delay-0": "0"}


@pytest.mark.parametrize("window_ms", [100, 250, 1000, 2000])
def test_the_delay_topology_is_bounded_and_covers_a_year(window_ms: int) -> None:
    plan = DelayPlan(window_ms)
    queues = plan.levels * (DELAY_RADIX - 1)
    exchanges = plan.levels + 1  # one per level, plus the due exchange
    assert queues + exchanges <= 64
    assert plan.max_broker_delay_ms >= ONE_YEAR_MS
    assert plan.lead_ms + plan.unit_ms == window_ms


@pytest.mark.parametrize("window_ms", [0, 99, 2001])
def test_the_window_is_bounded(window_ms: int) -> None:
    with pytest.raises(ValueError, match="delay_window_ms"):
        DelayPlan(window_ms)


def test_delay_queue_names_are_distinct() -> None:
    t = Topology()
    names = {t.delay_queue(lv, d) for lv in range(t.delay.levels) for d in range(1, DELAY_RADIX)}
    assert len(names) == t.delay.levels * (DELAY_RADIX - 1)
    # delay_queues() lists each of them once, level by level.
    assert len(t.delay_queues()) == len(names)
    assert set(t.delay_queues()) == names
    assert t.delay_queues()[0] == t.delay_queue(0, 1)


def test_short_delays_skip_the_broker() -> None:
    t = Topology()
    route = t.delay_route(t.delay.lead_ms + t.delay.unit_ms - 1)
    assert route.exchange == t.due_exchange
    assert route.headers == {}
    assert route.broker_delay_ms == 0


def test_a_worked_example() -> None:
    # window 1000 ms: unit 666 ms, lead 334 ms. 10 s -> (10000 - 334) // 666 = 14 units
    # = 32 in base 4 (3*4 + 2): level 1 digit 3, then level 0 digit 2.
    t = Topology()
    route = t.delay_route(10_000)
    assert route.exchange == t.delay_exchange(1)
    assert route.headers == {"aw-delay-0": "2", "aw-delay-1": "3"}
    assert route.broker_delay_ms == 14 * 666


@given(delay_ms=st.floats(min_value=0, max_value=ONE_YEAR_MS))
def test_the_broker_never_holds_a_job_past_its_due_time(delay_ms: float) -> None:
    t = Topology()
    route = t.delay_route(delay_ms)
    held = route.broker_delay_ms
    assert held <= max(0.0, delay_ms - t.delay.lead_ms)
    # ...and releases it within the window, so the worker holds at most that long.
    assert delay_ms - held < t.delay.window_ms or held == t.delay.max_broker_delay_ms
    # The route names every level from the entry level down, zeros included.
    assert len(route.headers) == len(t.delay.digits(delay_ms))


def test_the_queues_of_a_job_queue_and_every_exchange() -> None:
    t = Topology(name="app", queue_prefix="p.")
    assert t.queues_of("emails") == (
        t.work_queue("emails"),
        t.due_queue("emails"),
        t.failed_queue("emails"),
        t.quarantine_queue("emails"),
    )
    exchanges = t.exchanges()
    assert exchanges[:2] == [t.exchange, t.due_exchange]
    assert exchanges[2:] == [t.delay_exchange(level) for level in range(t.delay.levels)]
    assert len(set(exchanges)) == len(exchanges)


def test_results_stream_and_group_queue_names() -> None:
    topology = Topology(name="app", queue_prefix="p.")
    assert topology.results_stream == "app.results"
    assert topology.group_queue("g1") == "app.group.g1"
    with pytest.raises(ValueError, match="255"):
        topology.group_queue("g" * 250)


def test_the_results_stream_is_bounded_by_age_and_size() -> None:
    arguments = Topology().results_stream_arguments(ttl_s=90.5, max_bytes=1024**3)
    assert arguments == {
        "x-queue-type": "stream",
        "x-max-age": "91s",
        "x-max-length-bytes": 1024**3,
        "x-stream-max-segment-size-bytes": 64 * 1024 * 1024,
    }
    small = Topology().results_stream_arguments(ttl_s=1, max_bytes=2 * 1024 * 1024)
    assert small["x-stream-max-segment-size-bytes"] == 1024 * 1024


def test_a_group_queue_dead_letters_its_callback_to_the_work_queue() -> None:
    topology = Topology(name="app", queue_prefix="p.")
    assert group_queue_arguments(topology, "emails") == {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "p.emails",
    }
    assert group_queue_arguments(topology, None) == {"x-queue-type": "classic"}
    # Never an expiry or a TTL: the queue holds a job (the callback).
    assert not {"x-expires", "x-message-ttl"} & set(group_queue_arguments(topology, "q"))


def test_partition_queues_are_quorum_single_active_consumer_and_dead_letter_to_failed() -> None:
    t = Topology(name="app", queue_prefix="p-")
    assert partition_queue(t, "orders", 3) == "app.partition.p-orders.3"
    args = partition_queue_arguments(t, "orders", max_deliveries=5)
    assert args == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 5,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "app.failed.p-orders",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-single-active-consumer": True,
    }
    assert "x-expires" not in args
    with pytest.raises(ValueError, match="bytes"):
        partition_queue(t, "q" * 240, 0)


def test_partition_of_is_crc32_of_the_utf8_key_modulo_partitions() -> None:
    assert partition_of("customer-42", 8) == zlib.crc32(b"customer-42") % 8
    assert partition_of("é", 3) == zlib.crc32("é".encode()) % 3
    assert {partition_of(f"k{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="partitions"):
        partition_of("k", 0)
