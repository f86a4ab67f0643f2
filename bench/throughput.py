"""Throughput of amqp-worker against raw aio-pika, measured in one run on one broker.

Usage::

    python3 bench/throughput.py                  # 10,000 jobs, median of 3 rounds
    python3 bench/throughput.py --queue-types classic quorum   # the same rows on quorum queues
    python3 bench/throughput.py --jobs 1000 --rounds 1 --json  # the smoke CI can run
    python3 bench/throughput.py --profile consume.prof   # plus one cProfiled consume
    python3 bench/throughput.py --publish-only --rounds 5  # the publish rows alone
    python3 bench/throughput.py --publish-only --profile-publishing 12  # and their profiles

Every worker consume checks that each job ran exactly once (the handler counts
each job's ``i``), and that nothing is left in the work or failed queue.

Every round uses fresh, uniquely named queues and exchanges (``awbench-<hex>``)
and deletes them afterwards, also when the round fails. See ``bench/README.md``
for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from _shared import delete_all, describe, environment
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from pydantic import BaseModel

from amqp_worker import AMQPSettings, AMQPWorker, Job
from amqp_worker._rabbitmq.topology import QueueType, Topology, queue_arguments
from amqp_worker.testing import delete_topology

DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_FLIGHT = 256
PREFETCH = 50
MAX_CONCURRENCY = 25
#: Give up on a phase that has not finished by then (a lost message would hang forever).
PHASE_TIMEOUT_S = 300.0

RAW_PUBLISH = "raw publish (pipelined)"
RAW_PUBLISH_SEQ = "raw publish (sequential)"
WORKER_PERFORM = "worker perform (sequential)"
WORKER_PERFORM_MANY = "worker perform_many"
WORKER_PERFORM_CONCURRENT = "worker perform (256 concurrent)"
RAW_CONSUME = "raw consume"
WORKER_CONSUME_ASYNC = "worker consume (async handler)"
WORKER_CONSUME_TYPED = "worker consume (typed args)"
WORKER_CONSUME_SYNC = "worker consume (sync handler)"
RAW_MIXED = "raw mixed"
WORKER_MIXED = "worker mixed"

#: Table rows in order, each with the raw aio-pika case it is compared with.
ROWS: list[tuple[str, str]] = [
    (RAW_PUBLISH, RAW_PUBLISH),
    (RAW_PUBLISH_SEQ, RAW_PUBLISH_SEQ),
    (WORKER_PERFORM, RAW_PUBLISH_SEQ),
    (WORKER_PERFORM_MANY, RAW_PUBLISH),
    (WORKER_PERFORM_CONCURRENT, RAW_PUBLISH),
    (RAW_CONSUME, RAW_CONSUME),
    (WORKER_CONSUME_ASYNC, RAW_CONSUME),
    (WORKER_CONSUME_TYPED, RAW_CONSUME),
    (WORKER_CONSUME_SYNC, RAW_CONSUME),
    (RAW_MIXED, RAW_MIXED),
    (WORKER_MIXED, RAW_MIXED),
]

#: The handler each worker consume row runs.
HANDLERS = {
    WORKER_CONSUME_ASYNC: "noop_async",
    WORKER_CONSUME_TYPED: "noop_typed",
    WORKER_CONSUME_SYNC: "noop_sync",
}


class NoopArgs(BaseModel):
    """The typed-args row's model: what a real handler would declare."""

    i: int


# -- names and cleanup ---------------------------------------------------------------


@dataclass
class Names:
    """Everything one round creates on the broker."""

    queue_type: QueueType = "classic"
    prefix: str = field(default_factory=lambda: f"awbench-{uuid.uuid4().hex[:12]}")

    @property
    def raw_arguments(self) -> dict[str, Any]:
        """The raw queue's arguments: the same queue type as the worker's."""
        return queue_arguments(self.queue_type)

    @property
    def raw_exchange(self) -> str:
        return f"{self.prefix}.raw"

    @property
    def raw_queue(self) -> str:
        return f"{self.prefix}.raw"

    @property
    def worker_name(self) -> str:
        return self.prefix

    @property
    def worker_queue(self) -> str:
        return f"{self.prefix}.jobs"


async def cleanup(url: str, names: Names) -> None:
    """Delete the round's raw queue and exchange and the worker's whole topology."""
    settings = AMQPSettings(url=url, name=names.worker_name, queue_type=names.queue_type)
    await delete_topology(settings, [names.worker_queue])
    await delete_all(url, [names.raw_queue], [names.raw_exchange])


async def ready_messages(channel: AbstractChannel, queue: str) -> int:
    """Ready (not unacked) messages in ``queue``."""
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


# -- timing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Wall-clock time, and CPU time of this whole process (all threads), of one phase."""

    wall_s: float
    cpu_s: float


class Stopwatch:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def stop(self) -> Span:
        return Span(time.perf_counter() - self.wall, time.process_time() - self.cpu)


# -- raw aio-pika baseline -------------------------------------------------------------


def raw_body(queue: str, i: int) -> bytes:
    """A JSON body of about 120 bytes, built per message like a real publisher would."""
    return json.dumps(
        {"handler": "noop", "queue": queue, "args": {"i": i}, "id": uuid.uuid4().hex}
    ).encode()


def raw_message(queue: str, i: int) -> aio_pika.Message:
    return aio_pika.Message(
        raw_body(queue, i),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def declare_raw(connection: AbstractConnection, names: Names) -> None:
    """The raw rows' durable direct exchange and queue (of the round's queue type)."""
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        names.raw_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        names.raw_queue, durable=True, arguments=names.raw_arguments
    )
    await queue.bind(exchange, names.raw_queue)
    await channel.close()


async def raw_publish_pipelined(connection: AbstractConnection, names: Names, n: int) -> None:
    """``n`` confirmed publishes, at most IN_FLIGHT unconfirmed at once."""
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.raw_exchange)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await exchange.publish(raw_message(names.raw_queue, i), names.raw_queue, mandatory=True)

    await asyncio.gather(*(one(i) for i in range(n)))
    await channel.close()


async def raw_publish(connection: AbstractConnection, names: Names, n: int) -> Span:
    """Pipelined confirmed publishes, at most IN_FLIGHT unconfirmed; seconds taken."""
    watch = Stopwatch()
    await raw_publish_pipelined(connection, names, n)
    return watch.stop()


async def raw_publish_sequential(connection: AbstractConnection, names: Names, n: int) -> Span:
    """One confirmed publish at a time (the raw counterpart of ``perform``); seconds taken."""
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(names.raw_exchange)
    watch = Stopwatch()
    for i in range(n):
        await exchange.publish(raw_message(names.raw_queue, i), names.raw_queue, mandatory=True)
    elapsed = watch.stop()
    await channel.close()
    return elapsed


class RawConsumer:
    """``queue.consume`` with prefetch PREFETCH, acking each message in its callback."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.count += 1
        if self.count == self.n:
            self.done.set()

    async def run(self, connection: AbstractConnection, names: Names, during: Any = None) -> Span:
        """Consume until the n-th ack; timed from ``consume()``, or from ``during``'s start."""
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(names.raw_queue, passive=True)
        if during is None:
            watch = Stopwatch()
            tag = await queue.consume(self.on_message)
        else:
            tag = await queue.consume(self.on_message)
            watch = Stopwatch()
            publishing = asyncio.ensure_future(during)
        await asyncio.wait_for(self.done.wait(), PHASE_TIMEOUT_S)
        elapsed = watch.stop()
        if during is not None:
            await publishing
        await queue.cancel(tag)
        await channel.close()
        return elapsed


async def raw_consume(connection: AbstractConnection, names: Names, n: int) -> Span:
    """Consume and ack ``n`` messages with prefetch PREFETCH; seconds to the n-th ack."""
    return await RawConsumer(n).run(connection, names)


async def raw_mixed(url: str, names: Names, n: int) -> Span:
    """A consumer runs while a publisher (its own connection) publishes ``n`` pipelined.

    Timed from the first publish to the n-th ack.
    """
    publisher = await aio_pika.connect(url)
    consumer = await aio_pika.connect(url)
    try:
        during = raw_publish_pipelined(publisher, names, n)
        return await RawConsumer(n).run(consumer, names, during)
    finally:
        await consumer.close()
        await publisher.close()


# -- amqp-worker -----------------------------------------------------------------------


def make_worker(url: str, names: Names) -> AMQPWorker:
    return AMQPWorker(
        url,
        name=names.worker_name,
        queues=[names.worker_queue],
        max_concurrency=MAX_CONCURRENCY,
        queue_type=names.queue_type,
    )


async def warm_up(worker: AMQPWorker, names: Names) -> None:
    """Connect and declare the work queue, as the first ``perform`` would, before timing."""
    await worker._broker.connect()
    await worker._broker.declarations.ensure_work_queue(names.worker_queue)


def bench_job(names: Names, handler: str, i: int) -> Job:
    return Job(handler=handler, queue=names.worker_queue, args={"i": i})


async def worker_perform(worker: AMQPWorker, names: Names, n: int) -> Span:
    """``await perform(Job(...))`` one at a time, Job construction included."""
    watch = Stopwatch()
    for i in range(n):
        await worker.perform(bench_job(names, "noop_async", i))
    return watch.stop()


async def worker_perform_concurrent(worker: AMQPWorker, names: Names, n: int) -> Span:
    """``n`` ``perform`` calls, at most IN_FLIGHT awaiting their confirm at once."""
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with slots:
            await worker.perform(bench_job(names, "noop_async", i))

    watch = Stopwatch()
    await asyncio.gather(*(one(i) for i in range(n)))
    return watch.stop()


async def perform_many(worker: AMQPWorker, names: Names, n: int, handler: str) -> None:
    await worker.perform_many(bench_job(names, handler, i) for i in range(n))


async def worker_perform_many(worker: AMQPWorker, names: Names, n: int, handler: str) -> Span:
    """One ``perform_many`` of ``n`` jobs, Job construction included."""
    watch = Stopwatch()
    await perform_many(worker, names, n, handler)
    return watch.stop()


def in_flight(worker: AMQPWorker) -> int:
    """Job tasks of ``worker`` not yet finished; a task ends only after its ack is sent.

    Reads the private task pool: the bench is part of the project and there is no
    public counter. :func:`check_private_parts` makes sure it is there.
    """
    running: int = worker._pool.running
    waiting: int = worker._pool.waiting
    return running + waiting


def check_private_parts(url: str) -> None:
    """Stop with a clear message if AMQPWorker lost a private part this bench uses.

    ``in_flight`` reads ``_pool``, ``until_idle`` calls ``_settler`` and ``warm_up``
    calls ``_broker``. Without them a
    round would crash midway or, worse, time something else; check before any round.
    """
    worker = AMQPWorker(url, name="awbench-check", queues=["check"])
    missing: list[str] = []
    for part, members, user in (
        ("_pool", ("running", "waiting"), "in_flight"),
        ("_broker", ("connect", "declarations"), "warm_up"),
        ("_settler", ("wait",), "until_idle"),
    ):
        if not hasattr(worker, part):
            missing.append(f"{part} (read by {user})")
            continue
        owner = getattr(worker, part)
        missing += [f"{part}.{m} (read by {user})" for m in members if not hasattr(owner, m)]
    if missing:
        raise SystemExit(
            "bench/throughput.py: AMQPWorker no longer has "
            + ", ".join(missing)
            + "; update the bench to the worker's new internals"
        )


@dataclass
class ConsumeResult:
    span: Span
    """From ``start()`` until the n-th handler call returned and every ack was sent."""
    start_s: float
    """How long ``start()`` itself took (declarations, consumers); part of ``seconds``."""
    steady_s: float
    """From the first handler call to the end: ``seconds`` without the declarations."""


class Tally:
    """Counts handler calls per job (``args.i``), from the loop or from threads."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = [0] * n
        self.count = 0
        self.first = 0.0
        self.done = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()

    def hit(self, i: int) -> None:
        with self._lock:
            self.calls[i] += 1
            self.count += 1
            if self.count == 1:
                self.first = time.perf_counter()
            last = self.count == self.n
        if last:
            self._loop.call_soon_threadsafe(self.done.set)

    def check(self) -> None:
        """Every job ran exactly once."""
        missing = sum(1 for calls in self.calls if calls == 0)
        twice = sum(1 for calls in self.calls if calls > 1)
        if missing or twice:
            raise RuntimeError(f"{missing} jobs never ran, {twice} ran more than once")


def consuming_worker(url: str, names: Names, tally: Tally) -> AMQPWorker:
    """A worker with the three no-op handlers; each job's handler picks which runs."""
    worker = make_worker(url, names)

    async def noop_async(args: dict[str, Any]) -> None:
        tally.hit(args["i"])

    async def noop_typed(args: NoopArgs) -> None:
        tally.hit(args.i)

    def noop_sync(args: dict[str, Any]) -> None:
        tally.hit(args["i"])

    worker.register("noop_async", noop_async)
    worker.register("noop_typed", noop_typed)
    worker.register("noop_sync", noop_sync)
    return worker


async def until_idle(worker: AMQPWorker, tally: Tally) -> None:
    """Wait for the n-th handler call, then for every job task (each ends after its ack)."""
    await asyncio.wait_for(tally.done.wait(), PHASE_TIMEOUT_S)
    # The pool has no "idle" event to wait on; the tail after the n-th call is short.
    while in_flight(worker):  # noqa: ASYNC110
        await asyncio.sleep(0)
    # Acks are batched per loop pass: the round ends once the last one is written.
    await worker._settler.wait()


async def worker_consume(
    url: str,
    names: Names,
    n: int,
    profile: cProfile.Profile | None = None,
) -> ConsumeResult:
    """Start a worker on a queue holding ``n`` jobs; time until all ran and were acked."""
    tally = Tally(n)
    worker = consuming_worker(url, names, tally)
    try:
        if profile is not None:
            profile.enable()
        watch = Stopwatch()
        await worker.start()
        started = time.perf_counter()
        await until_idle(worker, tally)
        span = watch.stop()
        end = time.perf_counter()
    finally:
        if profile is not None:
            profile.disable()
        await worker.stop()
    tally.check()
    return ConsumeResult(span, started - watch.wall, end - tally.first)


async def worker_mixed(url: str, names: Names, n: int) -> Span:
    """A started worker consumes while a publisher worker runs one ``perform_many`` of ``n``.

    Timed from the first publish to the n-th handler call and its ack, as ``raw mixed``.
    """
    tally = Tally(n)
    worker = consuming_worker(url, names, tally)
    publisher = make_worker(url, names)
    try:
        await warm_up(publisher, names)
        await worker.start()
        watch = Stopwatch()
        publishing = asyncio.ensure_future(perform_many(publisher, names, n, "noop_async"))
        await until_idle(worker, tally)
        span = watch.stop()
        await publishing
    finally:
        await worker.stop()
        await publisher.stop()
    tally.check()
    return span


async def check_drained(connection: AbstractConnection, names: Names) -> None:
    """Every job was acked (none requeued by stop()) and none was parked as failed."""
    channel = await connection.channel()
    topology = Topology(name=names.worker_name, queue_type=names.queue_type)
    left = await ready_messages(channel, topology.work_queue(names.worker_queue))
    failed = await ready_messages(channel, topology.failed_queue(names.worker_queue))
    await channel.close()
    if left or failed:
        raise RuntimeError(f"{left} jobs left in the work queue, {failed} parked as failed")


async def purge(connection: AbstractConnection, queue: str) -> None:
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, passive=True)
    await declared.purge()
    await channel.close()


# -- one round -----------------------------------------------------------------------


async def end_round(
    url: str, names: Names, connection: AbstractConnection, publisher: AMQPWorker | None
) -> None:
    """Stop the round's publisher, close its connection, delete everything it declared."""
    try:
        if publisher is not None:
            await publisher.stop()
        await connection.close()
    finally:
        await cleanup(url, names)


async def each_publish_row(
    url: str, n: int, queue_type: QueueType, measure: Callable[[str, Any], Awaitable[None]]
) -> None:
    """Run the publish rows once each, raw and worker alternating: ``await measure(case, run)``.

    ``run()`` publishes ``n`` jobs and returns its :class:`Span`; the queue is
    purged after each row, and everything is deleted at the end.
    """
    names = Names(queue_type)
    publisher: AMQPWorker | None = None
    connection = await aio_pika.connect(url)
    try:
        await declare_raw(connection, names)
        publisher = make_worker(url, names)
        await warm_up(publisher, names)
        work_queue = publisher.topology.work_queue(names.worker_queue)
        worker = publisher
        cases: list[tuple[str, Any, str]] = [
            (
                RAW_PUBLISH_SEQ,
                lambda: raw_publish_sequential(connection, names, n),
                names.raw_queue,
            ),
            (WORKER_PERFORM, lambda: worker_perform(worker, names, n), work_queue),
            (RAW_PUBLISH, lambda: raw_publish(connection, names, n), names.raw_queue),
            (
                WORKER_PERFORM_MANY,
                lambda: worker_perform_many(worker, names, n, "noop_async"),
                work_queue,
            ),
            (
                WORKER_PERFORM_CONCURRENT,
                lambda: worker_perform_concurrent(worker, names, n),
                work_queue,
            ),
        ]
        for case, run, queue in cases:
            await measure(case, run)
            await purge(connection, queue)
    finally:
        await end_round(url, names, connection, publisher)


async def run_publish_round(url: str, n: int, queue_type: QueueType) -> dict[str, float]:
    """The publish rows alone (``--publish-only``); per case wall and CPU seconds."""
    seconds: dict[str, float] = {}

    async def measure(case: str, run: Any) -> None:
        span = await run()
        seconds[case], seconds[case + " cpu_s"] = span.wall_s, span.cpu_s

    await each_publish_row(url, n, queue_type, measure)
    return seconds


async def profile_publishing(url: str, n: int, limit: int) -> list[dict[str, Any]]:
    """One cProfiled run of each publish row: calls per job and the top self-time functions."""
    reports: list[dict[str, Any]] = []

    async def measure(case: str, run: Any) -> None:
        profile = cProfile.Profile()
        profile.enable()
        await run()
        profile.disable()
        entries: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        calls = sum(row[1] for row in entries.values())
        top = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
        reports.append(
            {
                "case": case,
                "calls_per_job": round(calls / n, 1),
                "top_self_time": [
                    {
                        "function": short_name(key),
                        "calls_per_job": round(row[1] / n, 2),
                        "self_us_per_job": round(row[2] / n * 1e6, 1),
                    }
                    for key, row in top
                    if key[0] != "~" or "poll" not in key[2]  # waiting for the socket, not work
                ][:limit],
            }
        )

    await each_publish_row(url, n, "classic", measure)
    return reports


def short_name(key: tuple[str, int, str]) -> str:
    """``package/module.py:line(function)`` for a profile entry, or the builtin's name."""
    filename, line, func = key
    if filename == "~":
        return func
    parts = filename.replace("\\", "/").split("/")
    for anchor in ("site-packages", "src", "python3.11", "bench"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{'/'.join(parts[-2:])}:{line}({func})"


async def run_round(url: str, n: int, queue_type: QueueType) -> dict[str, float]:
    """Per case: wall seconds (``case``) and CPU seconds (``case cpu_s``); consume extras."""
    names = Names(queue_type)
    seconds: dict[str, float] = {}

    def record(case: str, span: Span) -> None:
        seconds[case] = span.wall_s
        seconds[case + " cpu_s"] = span.cpu_s

    def record_consume(case: str, result: ConsumeResult) -> None:
        record(case, result.span)
        seconds[case + " start_s"] = result.start_s
        seconds[case + " steady_s"] = result.steady_s

    publisher: AMQPWorker | None = None
    connection = await aio_pika.connect(url)
    try:
        await declare_raw(connection, names)
        record(RAW_PUBLISH, await raw_publish(connection, names, n))
        record(RAW_CONSUME, await raw_consume(connection, names, n))
        record(RAW_PUBLISH_SEQ, await raw_publish_sequential(connection, names, n))
        await purge(connection, names.raw_queue)
        record(RAW_MIXED, await raw_mixed(url, names, n))

        publisher = make_worker(url, names)
        await warm_up(publisher, names)
        record(WORKER_PERFORM, await worker_perform(publisher, names, n))
        await purge(connection, names.worker_queue)
        record(WORKER_PERFORM_CONCURRENT, await worker_perform_concurrent(publisher, names, n))
        await purge(connection, names.worker_queue)
        for case in (WORKER_CONSUME_ASYNC, WORKER_CONSUME_TYPED, WORKER_CONSUME_SYNC):
            span = await worker_perform_many(publisher, names, n, HANDLERS[case])
            if case == WORKER_CONSUME_ASYNC:
                record(WORKER_PERFORM_MANY, span)
            record_consume(case, await worker_consume(url, names, n))
            await check_drained(connection, names)
        record(WORKER_MIXED, await worker_mixed(url, names, n))
        await check_drained(connection, names)
    finally:
        await end_round(url, names, connection, publisher)
    return seconds


async def run_profile(url: str, n: int, path: str) -> pstats.Stats:
    """Publish ``n`` jobs, then consume them once under cProfile (async no-op handler)."""
    names = Names()
    publisher = make_worker(url, names)
    profile = cProfile.Profile()
    try:
        await warm_up(publisher, names)
        await worker_perform_many(publisher, names, n, "noop_async")
        await worker_consume(url, names, n, profile=profile)
    finally:
        try:
            await publisher.stop()
        finally:
            await cleanup(url, names)
    profile.dump_stats(path)
    return pstats.Stats(profile)


PROFILED_PACKAGES = ("amqp_worker", "pydantic", "aio_pika", "aiormq", "pamqp")


def top_self_time(stats: pstats.Stats, limit: int) -> list[dict[str, Any]]:
    """Functions of PROFILED_PACKAGES with the most self time, highest first."""
    rows: list[dict[str, Any]] = []
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in entries.items():
        if filename == "~":  # a builtin, e.g. pydantic_core's validate_json
            if not any(package in func for package in PROFILED_PACKAGES):
                continue
            name = func
        else:
            parts = filename.replace("\\", "/").split("/")
            package = next((p for p in parts if p in PROFILED_PACKAGES), None)
            if package is None:
                continue
            name = f"{'/'.join(parts[parts.index(package) :])}:{line}({func})"
        rows.append(
            {
                "function": name,
                "calls": calls,
                "self_s": tottime,
                "cumulative_s": cumtime,
            }
        )
    rows.sort(key=lambda row: row["self_s"], reverse=True)
    return rows[:limit]


# -- reporting -----------------------------------------------------------------------


def summarize(rounds: list[dict[str, float]], n: int) -> list[dict[str, Any]]:
    rows = [(case, baseline) for case, baseline in ROWS if case in rounds[0]]
    rate = {case: statistics.median(n / r[case] for r in rounds) for case, _ in rows}
    results = []
    for case, baseline in rows:
        row: dict[str, Any] = {
            "case": case,
            "jobs_per_s": round(rate[case], 1),
            "baseline": baseline,
            "ratio": round(rate[case] / rate[baseline], 3),
            "cpu_us_per_job": round(
                statistics.median(r[case + " cpu_s"] for r in rounds) / n * 1e6, 1
            ),
            "rounds_jobs_per_s": [round(n / r[case], 1) for r in rounds],
            "rounds_cpu_us_per_job": [round(r[case + " cpu_s"] / n * 1e6, 1) for r in rounds],
            # Same-round ratios: less sensitive to a busy machine drifting between rounds.
            "rounds_ratio": [round(r[baseline] / r[case], 3) for r in rounds],
        }
        if case + " start_s" in rounds[0]:
            row["start_s_median"] = round(
                statistics.median(r[case + " start_s"] for r in rounds), 4
            )
            row["steady_jobs_per_s"] = round(
                statistics.median(n / r[case + " steady_s"] for r in rounds), 1
            )
        results.append(row)
    cpu = {row["case"]: row["cpu_us_per_job"] for row in results}
    for row in results:
        row["cpu_ratio"] = round(cpu[row["case"]] / cpu[row["baseline"]], 3)
    return results


def print_table(report: dict[str, Any]) -> None:
    env = report["environment"]
    print(f"{report['jobs']:,} no-op jobs, median of {report['rounds']} round(s); {describe(env)}")
    for table in report["tables"]:
        print(f"\n{table['queue_type']} queues")
        header = (
            f"{'case':<32} {'jobs/s':>8} {'vs raw':>6} {'CPU us/job':>10} {'vs raw':>6}"
            "  rounds (jobs/s)"
        )
        print(header)
        print("-" * len(header))
        for row in table["results"]:
            rounds = ", ".join(f"{value:,.0f}" for value in row["rounds_jobs_per_s"])
            own = row["case"] == row["baseline"]
            ratio = "" if own else f"{row['ratio']:.2f}"
            cpu_ratio = "" if own else f"{row['cpu_ratio']:.2f}"
            print(
                f"{row['case']:<32} {row['jobs_per_s']:>8,.0f} {ratio:>6} "
                f"{row['cpu_us_per_job']:>10,.0f} {cpu_ratio:>6}  {rounds}"
            )
        print("consume rows include start(); from the first handler call on instead:")
        for row in table["results"]:
            if "start_s_median" in row:
                print(
                    f"  {row['case']}: {row['steady_jobs_per_s']:,.0f} jobs/s "
                    f"(start() took {row['start_s_median'] * 1000:.0f} ms)"
                )
    print(
        "\nvs raw: perform against raw publish (sequential); perform_many and 256 concurrent "
        "perform\nagainst raw publish (pipelined); consume rows against raw consume; worker "
        "mixed against\nraw mixed. CPU: this process's CPU time (all threads) per job; unlike "
        "jobs/s it hardly\ndepends on what else the machine is doing."
    )


async def main_async(args: argparse.Namespace) -> int:
    check_private_parts(args.url)
    tables: list[dict[str, Any]] = []
    for queue_type in args.queue_types:
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            if not args.json:
                print(
                    f"{queue_type} round {index + 1}/{args.rounds}...", file=sys.stderr, flush=True
                )
            run = run_publish_round if args.publish_only else run_round
            rounds.append(await run(args.url, args.jobs, queue_type))
        tables.append({"queue_type": queue_type, "results": summarize(rounds, args.jobs)})
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "environment": await environment(args.url),
        "tables": tables,
    }
    if args.profile:
        if not args.json:
            print("profiling one worker consume...", file=sys.stderr, flush=True)
        stats = await run_profile(args.url, args.jobs, args.profile)
        report["profile"] = {
            "path": args.profile,
            "total_s": round(stats.total_tt, 3),  # type: ignore[attr-defined]
            "top_self_time": top_self_time(stats, 15),
        }
    if args.profile_publishing:
        if not args.json:
            print("profiling each publish row...", file=sys.stderr, flush=True)
        report["publish_profiles"] = await profile_publishing(
            args.url, args.jobs, args.profile_publishing
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_table(report)
    for entry in report.get("publish_profiles", []):
        print(
            f"\ncProfile of {entry['case']}: {entry['calls_per_job']} calls per job; top self time:"
        )
        for row in entry["top_self_time"]:
            print(
                f"  {row['self_us_per_job']:7.1f} us/job {row['calls_per_job']:6.2f} calls/job  "
                f"{row['function']}"
            )
    if args.profile:
        profile = report["profile"]
        print(
            f"\ntop self time in {', '.join(PROFILED_PACKAGES)} "
            f"(cProfile of one worker consume, {profile['total_s']:.2f}s in all, {args.profile}):"
        )
        for row in report["profile"]["top_self_time"]:
            print(f"  {row['self_s']:7.3f}s {row['calls']:>8} calls  {row['function']}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per case (10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown (3)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--url", default=DEFAULT_URL, help="broker URL (AMQP_WORKER_BENCH_URL)")
    parser.add_argument(
        "--queue-types",
        nargs="+",
        choices=["classic", "quorum"],
        default=["classic"],
        help="queue types to measure, each in its own table (classic)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also run one extra worker consume under cProfile and save the stats to FILE",
    )
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="run only the publish rows (raw and worker, interleaved): quick before/after runs",
    )
    parser.add_argument(
        "--profile-publishing",
        metavar="N",
        type=int,
        default=0,
        help="also cProfile one run of each publish row; show its N top self-time functions",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main_async(parse_args())))
