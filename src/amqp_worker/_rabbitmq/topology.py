"""RabbitMQ names and arguments, as pure functions (no I/O; unit-tested without a broker).

For a worker ``name`` (default ``"amqp_worker"``) and ``queue_prefix``, a job
whose ``queue`` is ``Q`` uses:

==========================  ===================================  ==========================
what                        name                                 kind
==========================  ===================================  ==========================
jobs exchange               ``name``                             direct, durable
work queue                  ``prefix + Q``                       durable, bound by key ``Q``
failed-jobs queue           ``name.failed.`` + work queue        durable, no TTL, no expiry
due exchange                ``name.due``                         direct, durable
due queue                   ``name.due.`` + work queue           durable, bound by key ``Q``
delay exchange, level L     ``name.delay.u<unit>.L<L>``           headers, durable
delay queue                 ``name.delay.u<unit>.<ttl>ms``        durable, ``x-message-ttl``
==========================  ===================================  ==========================

The routing key of every job message is ``Q`` itself, so any legal queue
name works, dots included: the jobs and due exchanges are *direct* (exact
match), and the delay exchanges match on headers, never on the routing key.
See ``docs/topology.md`` for the delay design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from amqp_worker._core.defaults import DEFAULT_DELIVERY_LIMIT, DEFAULT_NAME
from amqp_worker._core.job import MAX_NAME_BYTES, QUEUE_NAME_CHARS

__all__ = [
    "DELAY_DIGIT_HEADER",
    "DELAY_RADIX",
    "ONE_YEAR_MS",
    "Binding",
    "DelayPlan",
    "DelayRoute",
    "QueueType",
    "Topology",
    "checked_name",
    "queue_arguments",
]

QueueType = Literal["classic", "quorum"]

#: Each delay level holds one of 1..3 units x 4**level; digit 0 skips the level.
DELAY_RADIX = 4
#: The delay topology must cover at least this much in one pass.
ONE_YEAR_MS = 366 * 24 * 3600 * 1000
#: Header carrying a message's digit for one delay level, e.g. ``aw-delay-3``.
#: Headers exchanges ignore binding arguments that start with ``x-``, so no ``x-`` here.
DELAY_DIGIT_HEADER = "aw-delay-{level}"


def _power(level: int) -> int:
    """``DELAY_RADIX ** level`` as an int (``**`` on ints is typed as possibly float)."""
    return int(DELAY_RADIX**level)


def checked_name(kind: str, value: str) -> str:
    """``value`` if it is a legal ``kind`` (queue, exchange) name, else ValueError saying why."""
    if not QUEUE_NAME_CHARS.fullmatch(value):
        raise ValueError(
            f"the {kind} name {value[:60]!r} may only hold letters, digits, space "
            "and - _ . : @ # , / +"
        )
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"the {kind} name {value[:60]!r}... would be {size} bytes; "
            f"AMQP allows {MAX_NAME_BYTES}: use a shorter name, queue_prefix or queue"
        )
    return value


#: Failed-jobs queues: every read (basic.get, then the channel closes) counts
#: as a delivery, so their limit must be out of reach of any number of reads.
FAILED_DELIVERY_LIMIT = 2**31 - 1
#: Arguments that quorum queues gained in this version, for the fallback in
#: Broker.declare_queue when a queue declared by an older version lacks them.
DELIVERY_LIMIT_ARGUMENTS = frozenset(
    {
        "x-delivery-limit",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-overflow",
    }
)


def queue_arguments(
    queue_type: QueueType,
    *,
    ttl_ms: int | None = None,
    dead_letter_exchange: str | None = None,
    dead_letter_routing_key: str | None = None,
    delivery_limit: int | None = None,
) -> dict[str, Any]:
    """Arguments for a queue of ``queue_type``; never ``x-expires``.

    ``x-expires`` would delete an idle queue *with its messages*: delay and
    failed queues are idle by design, so it is never set here.

    Classic queues get no ``x-queue-type`` argument, so work queues that were
    declared before amqp-worker (with no arguments) stay compatible, and no
    delivery limit (classic queues have none). Quorum queues dead-letter
    ``at-least-once``, which RabbitMQ only allows with
    ``x-overflow: reject-publish``, and get an explicit ``x-delivery-limit``.
    """
    args: dict[str, Any] = {}
    if queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        if delivery_limit is not None:
            args["x-delivery-limit"] = delivery_limit
    if ttl_ms is not None:
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be at least 1, got {ttl_ms}")
        args["x-message-ttl"] = ttl_ms
    if dead_letter_exchange is not None and (queue_type == "quorum" or ttl_ms is not None):
        args["x-dead-letter-exchange"] = dead_letter_exchange
        if dead_letter_routing_key is not None:
            args["x-dead-letter-routing-key"] = dead_letter_routing_key
        if queue_type == "quorum":
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
    return args


@dataclass(frozen=True, slots=True)
class Binding:
    """A binding from a delay exchange to a queue or to another exchange."""

    destination: str
    kind: Literal["queue", "exchange"]
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DelayRoute:
    """Where to publish a delayed job, and with which headers."""

    exchange: str
    headers: dict[str, str]
    broker_delay_ms: int
    """How long the broker holds the job; the worker holds the rest."""


@dataclass(frozen=True, slots=True)
class DelayPlan:
    """The fixed delay topology for one hold window.

    The broker holds a job for whole *units* (``unit_ms``), written in base 4:
    level ``L`` has one queue per digit ``d`` in 1..3 with ``x-message-ttl =
    d * 4**L * unit_ms``. The job enters at its highest non-zero level and
    dead-letters one level down after each queue, skipping levels whose digit
    is 0, then into the due exchange. It arrives ``lead_ms`` to ``lead_ms +
    unit_ms`` before its due time (less the time spent on hops), and the
    worker holds it for the rest, so it is never early and hardly late.
    """

    window_ms: int
    """The longest a worker holds a job that arrived before its due time."""

    MIN_WINDOW_MS = 100
    MAX_WINDOW_MS = 2000

    def __post_init__(self) -> None:
        if not self.MIN_WINDOW_MS <= self.window_ms <= self.MAX_WINDOW_MS:
            raise ValueError(
                f"delay_window_ms must be between {self.MIN_WINDOW_MS} and "
                f"{self.MAX_WINDOW_MS}, got {self.window_ms}"
            )

    @property
    def unit_ms(self) -> int:
        """The broker's resolution: two thirds of the window."""
        return (2 * self.window_ms) // 3

    @property
    def lead_ms(self) -> int:
        """How far ahead of the due time the broker releases a job, at least."""
        return self.window_ms - self.unit_ms

    @property
    def levels(self) -> int:
        """Enough base-4 levels that one pass through them covers a year."""
        levels = 1
        while (_power(levels) - 1) * self.unit_ms < ONE_YEAR_MS:
            levels += 1
        return levels

    @property
    def max_broker_delay_ms(self) -> int:
        """The longest the broker holds a job in one pass; longer delays take another pass."""
        return (_power(self.levels) - 1) * self.unit_ms

    def ttl_ms(self, level: int, digit: int) -> int:
        """TTL of the delay queue for ``digit`` (1..3) at ``level``."""
        return digit * _power(level) * self.unit_ms

    def digits(self, delay_ms: float) -> list[int]:
        """Base-4 digits (level 0 first) of the units the broker holds for ``delay_ms``.

        Empty when the delay is short enough for the worker to hold all of it.
        """
        units = int(max(0.0, delay_ms - self.lead_ms) // self.unit_ms)
        units = min(units, _power(self.levels) - 1)
        digits: list[int] = []
        while units:
            units, digit = divmod(units, DELAY_RADIX)
            digits.append(digit)
        return digits


@dataclass(frozen=True, slots=True)
class Topology:
    """Every exchange and queue name one worker ``name`` uses, and their arguments."""

    name: str = DEFAULT_NAME
    queue_prefix: str = ""
    queue_type: QueueType = "classic"
    delay: DelayPlan = DelayPlan(1000)
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    """``x-delivery-limit`` of quorum work, due and quarantine queues."""
    max_priority: int | None = None
    """``x-max-priority`` of classic work, due and quarantine queues; None: not set."""

    def __post_init__(self) -> None:
        # The longest derived name must still be a legal AMQP short string.
        checked_name("exchange", self.delay_exchange(self.delay.levels - 1))
        checked_name("queue", self.delay_queue(self.delay.levels - 1, DELAY_RADIX - 1))

    # -- names ----------------------------------------------------------------

    @property
    def exchange(self) -> str:
        """The direct exchange that routes new jobs to work queues by ``Job.queue``."""
        return self.name

    @property
    def due_exchange(self) -> str:
        """The direct exchange that routes delayed jobs to due queues by ``Job.queue``."""
        return f"{self.name}.due"

    def work_queue(self, queue: str) -> str:
        """The RabbitMQ queue that holds jobs for ``Job.queue == queue``."""
        return checked_name("queue", self.queue_prefix + queue)

    def failed_queue(self, queue: str) -> str:
        """Where jobs of ``queue`` that cannot run are parked, with the reason."""
        return checked_name("queue", f"{self.name}.failed.{self.work_queue(queue)}")

    def due_queue(self, queue: str) -> str:
        """Where delayed jobs of ``queue`` arrive shortly before they are due."""
        return checked_name("queue", f"{self.name}.due.{self.work_queue(queue)}")

    @property
    def schedule_queue(self) -> str:
        """The queue of schedule tokens; its single active consumer fires every schedule."""
        return f"{self.name}.schedules"

    @property
    def schedule_status_queue(self) -> str:
        """Holds one message: the leading replica's latest view of the schedules (for the CLI)."""
        return f"{self.name}.schedules.status"

    def schedule_queue_arguments(self) -> dict[str, Any]:
        """A single active consumer: one replica at a time receives the token and leads."""
        return {**queue_arguments(self.queue_type), "x-single-active-consumer": True}

    def schedule_status_queue_arguments(self) -> dict[str, Any]:
        """Keeps only the newest status message (older ones are dropped from the head)."""
        return {**queue_arguments(self.queue_type), "x-max-length": 1, "x-overflow": "drop-head"}

    def quarantine_queue(self, queue: str) -> str:
        """Where jobs of ``queue`` that came back unfinished (a worker died) run one at a time."""
        return checked_name("queue", f"{self.name}.quarantine.{self.work_queue(queue)}")

    @property
    def results_stream(self) -> str:
        """The stream that keeps job results and finished groups for ``result_ttl_s``."""
        return f"{self.name}.results"

    @property
    def cancels_stream(self) -> str:
        """The stream of cancelled job ids, kept for ``cancel_ttl_s`` (docs/controls.md#cancel)."""
        return f"{self.name}.cancels"

    def group_queue(self, group_id: str) -> str:
        """The queue where the members of group ``group_id`` report, holding its callback."""
        return checked_name("queue", f"{self.name}.group.{group_id}")

    def delay_exchange(self, level: int) -> str:
        """The headers exchange of delay ``level``."""
        return f"{self.name}.delay.u{self.delay.unit_ms}.L{level}"

    def delay_queue(self, level: int, digit: int) -> str:
        """The delay queue for ``digit`` at ``level``; its name carries its TTL."""
        return f"{self.name}.delay.u{self.delay.unit_ms}.{self.delay.ttl_ms(level, digit)}ms"

    def delay_queues(self) -> list[str]:
        """Every delay queue of the topology, level by level (shared by all job queues)."""
        return [
            self.delay_queue(level, digit)
            for level in range(self.delay.levels)
            for digit in range(1, DELAY_RADIX)
        ]

    def queues_of(self, queue: str) -> tuple[str, str, str, str]:
        """The queues of job queue ``queue``: work, due, failed-jobs and quarantine."""
        return (
            self.work_queue(queue),
            self.due_queue(queue),
            self.failed_queue(queue),
            self.quarantine_queue(queue),
        )

    def exchanges(self) -> list[str]:
        """Every exchange of the topology: the job exchange, the due one, one per delay level."""
        levels = range(self.delay.levels)
        return [self.exchange, self.due_exchange, *(self.delay_exchange(n) for n in levels)]

    # -- arguments --------------------------------------------------------------

    def work_queue_arguments(self, queue: str) -> dict[str, Any]:
        """Arguments of the work, due and quarantine queues of ``queue``.

        Quorum: a job delivered ``delivery_limit`` times is dead-lettered into
        the failed-jobs queue (its ``x-death`` reason says ``delivery_limit``),
        never dropped, on RabbitMQ 3.10 and 4.x alike. ``max_priority`` sets
        ``x-max-priority`` on classic ones (4.x quorum queues have two levels of their own).
        """
        arguments = queue_arguments(
            self.queue_type,
            dead_letter_exchange="",
            dead_letter_routing_key=self.failed_queue(queue),
            delivery_limit=self.delivery_limit,
        )
        if self.max_priority is not None and self.queue_type == "classic":
            arguments["x-max-priority"] = self.max_priority
        return arguments

    def failed_queue_arguments(self) -> dict[str, Any]:
        """Arguments of failed-jobs queues: no TTL, no expiry, a delivery limit out of reach."""
        return queue_arguments(self.queue_type, delivery_limit=FAILED_DELIVERY_LIMIT)

    def results_stream_arguments(self, ttl_s: float, max_bytes: int) -> dict[str, Any]:
        """A stream (results, cancels) dropping records older than ``ttl_s`` or past ``max_bytes``.

        Retention drops whole segments: they are small (1/16 of ``max_bytes``, 1 to 64 MiB).
        """
        segment = min(max(max_bytes // 16, 1024 * 1024), 64 * 1024 * 1024)
        return {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, math.ceil(ttl_s))}s",
            "x-max-length-bytes": max_bytes,
            "x-stream-max-segment-size-bytes": segment,
        }

    def delay_queue_arguments(self, level: int, digit: int) -> dict[str, Any]:
        """Arguments of a delay queue: its TTL, and the next exchange down as dead-letter target."""
        target = self.delay_exchange(level - 1) if level > 0 else self.due_exchange
        return queue_arguments(
            self.queue_type,
            ttl_ms=self.delay.ttl_ms(level, digit),
            dead_letter_exchange=target,
        )

    def delay_bindings(self, level: int) -> list[Binding]:
        """Bindings from delay ``level``'s exchange.

        Digit ``d`` > 0 goes into that digit's queue; digit 0 skips straight
        to the next level down (or to the due exchange below level 0).
        """
        header = DELAY_DIGIT_HEADER.format(level=level)
        skip_to = self.delay_exchange(level - 1) if level > 0 else self.due_exchange
        bindings = [
            Binding(self.delay_queue(level, digit), "queue", {"x-match": "all", header: str(digit)})
            for digit in range(1, DELAY_RADIX)
        ]
        bindings.append(Binding(skip_to, "exchange", {"x-match": "all", header: "0"}))
        return bindings

    def delay_route(self, delay_ms: float) -> DelayRoute:
        """How to publish a job due in ``delay_ms``: the entry exchange and digit headers."""
        digits = self.delay.digits(delay_ms)
        if not digits:
            return DelayRoute(self.due_exchange, {}, 0)
        headers = {
            DELAY_DIGIT_HEADER.format(level=level): str(digit) for level, digit in enumerate(digits)
        }
        held = sum(self.delay.ttl_ms(level, d) for level, d in enumerate(digits))
        return DelayRoute(self.delay_exchange(len(digits) - 1), headers, held)
