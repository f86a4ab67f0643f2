"""Hostile payloads published raw onto a work queue and a due queue: each runs once or is parked once, with its reason.

**Generated.** Hypothesis builds the bodies (``tests/harness/hostile.py``): random
bytes, invalid UTF-8, lone surrogates as JSON escapes, JSON of every shape,
nesting hundreds deep, numbers of thousands of digits, envelopes with wrong,
missing and extra fields, valid jobs for no registered handler, args that
break the ``typed`` handler's model, bodies over ``max_message_bytes``, with
lying content types and encodings; one in five goes to the due queue with an
``aw-due-ms`` that means "now" (missing, past, a string, a table, a float...),
and a good job sits among every 25. They are published in one batch over one
confirmed channel, then one worker takes them all, and one more good job
published after the batch. Every message is accounted for: each ran once or
was parked once, with the reason :func:`tests.harness.hostile.outcome` gives, and
was delivered exactly once; the worker's RSS grows by at most 5 MB between
the end of the first thousand messages and the end of the last.

CI generates 2,000 bodies. Set ``AMQP_WORKER_HOSTILE_PAYLOADS=10000`` (any
number of at least 2,000) for a longer run; its timeout grows with it.
``AMQP_WORKER_HOSTILE_REPORT=<path>`` writes the run's figures (counts per
outcome, timings, RSS) there as JSON.

**Hand-written.** An unknown handler, an empty body, ``aw-due-ms`` of odd
types and far in the future, ``aw-history`` and other ``aw-*`` headers that
are not what this library writes, content types and encodings that lie,
``message_id`` at the wire's 255-byte limit (a 10 kB one cannot be sent at all)
and a 10 kB job id, and properties RabbitMQ relays but the AMQP client could
not decode before (a non-UTF-8 ``message_id``, a timestamp past year 9999).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import logging
import os
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pamqp import encode

from amqp_worker import AMQPWorker, Job
from amqp_worker._core.hooks import JobEvent
from amqp_worker._rabbitmq.topology import DELAY_RADIX, Topology
from tests.amqp.conftest import Workers
from tests.harness.brokertools import delete_topology, drain, queue_state
from tests.harness.hostile import (
    INDEX_HEADER,
    MAX_BYTES,
    RAN,
    Case,
    Typed,
    check_kinds,
    due_in_ms,
    generate,
    hostile_count,
    outcome,
)
from tests.harness.leakwatch import LeakWatch, SecretUser

COUNT = hostile_count()
#: The RSS the worker may gain between the end of the first and of the last thousand messages.
MAX_RSS_GROWTH = 5 * 1024 * 1024

pytestmark = [pytest.mark.broker]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def text_bytes(texts: list[str]) -> int:
    return sum(sys.getsizeof(text) for text in texts)


def write_report(figures: dict[str, Any]) -> None:
    report = os.environ.get("AMQP_WORKER_HOSTILE_REPORT")
    if report:
        with open(report, "w") as out:
            json.dump(figures, out, indent=2)


def forget_captured_records() -> None:
    """Empty pytest's own log capture, which keeps every record (and what its args hold).

    The worker's memory is what is measured, not the test harness's: pytest's
    capture handlers keep each record's arguments (exceptions, with their
    tracebacks and frames) alive for the report. leak_watch's texts are
    counted and subtracted instead, since it must keep them to search them.
    """
    for handler in logging.getLogger().handlers:
        if hasattr(handler, "records") and hasattr(handler, "reset"):
            handler.reset()


@contextlib.contextmanager
def quiet_client_libraries() -> Iterator[None]:
    """aiormq and aio-pika at INFO: at DEBUG they log every frame of thousands of messages.

    amqp_worker's own logger stays at DEBUG, so leak_watch still sees every
    record the library writes.
    """
    loggers = [logging.getLogger(name) for name in ("aiormq", "aio_pika")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.INFO)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels, strict=True):
            one.setLevel(level)


def index_of(headers: Any) -> int | None:
    value = (headers or {}).get(INDEX_HEADER)
    return value if isinstance(value, int) else None


def count_deliveries(worker: AMQPWorker, deliveries: list[int]) -> None:
    """Count every delivery of a numbered message to ``worker``, on its work and due queues."""
    on_message, on_due = worker._intake.on_message, worker._intake.on_due

    def counting(
        callback: Callable[[str, AbstractIncomingMessage], Any],
    ) -> Callable[[str, AbstractIncomingMessage], Any]:
        async def counted(queue: str, message: AbstractIncomingMessage) -> None:
            index = index_of(message.headers)
            if index is not None:
                deliveries[index] += 1
            await callback(queue, message)

        return counted

    worker._intake.on_message = counting(on_message)  # type: ignore[method-assign]
    worker._intake.on_due = counting(on_due)  # type: ignore[method-assign]


def message_of(index: int, case: Case) -> aio_pika.Message:
    return aio_pika.Message(
        case.body,
        headers={**case.headers, INDEX_HEADER: index},
        content_type=case.content_type,
        content_encoding=case.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=f"hostile-{index}",
    )


@pytest.mark.timeout(60 + COUNT * 0.03)
async def test_generated_hostile_payloads_each_run_or_park_once_with_their_reason(
    workers: Workers, secret_user: SecretUser, leak_watch: LeakWatch
) -> None:
    began = time.perf_counter()
    cases = generate(COUNT)
    expected = [outcome(case.body) for case in cases]
    per_outcome = check_kinds(cases)
    generated_s = time.perf_counter() - began

    worker = workers(url=secret_user.url(), max_message_bytes=MAX_BYTES)
    late = COUNT  # the index of the good job published after the batch
    ran, parked, deliveries = [0] * (COUNT + 1), [0] * (COUNT + 1), [0] * (COUNT + 1)
    reasons: list[str | None] = [None] * (COUNT + 1)
    processed = 0
    checkpoints: dict[int, tuple[int, int]] = {}
    all_done, late_ran = asyncio.Event(), asyncio.Event()

    def checkpoint(at: int) -> None:
        forget_captured_records()
        gc.collect()
        checkpoints[at] = (rss_bytes(), len(leak_watch.texts))

    def tick(index: int) -> None:
        nonlocal processed
        if index == late:
            late_ran.set()
            return
        processed += 1
        if processed % 100 == 0:
            # RSS is a high-water mark: records pytest kept for thousands of messages, even
            # if freed at a checkpoint, would show as growth the worker never had.
            forget_captured_records()
        if processed in (1000, COUNT):
            checkpoint(processed)
        if processed == COUNT:
            all_done.set()

    @worker.handler("plain")
    async def plain(args: dict[str, Any]) -> None:
        pass

    @worker.handler("typed")
    async def typed(args: Typed) -> None:
        pass

    @worker.hooks.after
    def after(event: JobEvent) -> None:
        index = index_of(event.headers)
        assert index is not None
        ran[index] += 1
        tick(index)

    @worker.hooks.on_parked
    def on_parked(event: JobEvent) -> None:
        index = index_of(event.headers)
        assert index is not None
        assert event.reason is not None
        parked[index] += 1
        reasons[index] = event.reason.value
        tick(index)

    count_deliveries(worker, deliveries)
    queue = workers.queue
    with quiet_client_libraries():
        async with worker:
            began = time.perf_counter()
            async with await aio_pika.connect(secret_user.url()) as connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(worker.topology.exchange, ensure=False)
                due_queue = worker.topology.due_queue(queue)

                async def publish(index: int) -> None:
                    case = cases[index]
                    if case.due:
                        await channel.default_exchange.publish(message_of(index, case), due_queue)
                    else:
                        await exchange.publish(message_of(index, case), queue)

                for start in range(0, COUNT, 500):
                    await asyncio.gather(
                        *(publish(i) for i in range(start, min(COUNT, start + 500)))
                    )
                published_s = time.perf_counter() - began
                good = Job(handler="plain", queue=queue, args={"late": True})
                await publish_late(exchange, queue, good, late)
            try:
                await asyncio.wait_for(all_done.wait(), 30 + COUNT * 0.02)
                await asyncio.wait_for(late_ran.wait(), 10)
            except TimeoutError:
                missing = [i for i in range(COUNT + 1) if not ran[i] and not parked[i]]
                pytest.fail(
                    f"{processed} of {COUNT} settled, late job ran: {late_ran.is_set()}; "
                    f"never settled: {[(i, deliveries[i]) for i in missing[:10]]} (index, deliveries)"
                )
            processed_s = time.perf_counter() - began
    leak_watch.see(worker, worker.settings)

    # Every message ran once or was parked once, as its body says, delivered exactly once.
    wrong = [
        (i, expected[i], reasons[i], ran[i], parked[i], cases[i].kind, cases[i].body[:80])
        for i in range(COUNT)
        if (ran[i], parked[i], reasons[i])
        != ((1, 0, None) if expected[i] == RAN else (0, 1, expected[i]))
    ]
    assert not wrong, f"{len(wrong)} messages not settled as expected, e.g. {wrong[:5]}"
    assert ran[late] == 1
    assert [i for i, n in enumerate(deliveries) if n != 1] == []
    # The failed-jobs queue holds exactly the parked ones, bodies untouched, reasons in headers.
    kept = await drain(worker.topology.failed_queue(queue))
    assert sum(parked) == len(kept) == sum(1 for e in expected if e != RAN)
    for message in kept:
        index = message["headers"][INDEX_HEADER]
        assert message["headers"]["aw-failure-reason"] == expected[index]
        assert message["body"] == cases[index].body
        assert "aw-deliveries" not in message["headers"]
    for name in (
        worker.topology.work_queue(queue),
        worker.topology.due_queue(queue),
        worker.topology.quarantine_queue(queue),
    ):
        state = await queue_state(name)
        assert state is None or state[0] == 0, name
    # Memory: the process's RSS stays flat, even with the log texts leak_watch keeps in it.
    (rss_first, texts_first), (rss_last, texts_last) = checkpoints[1000], checkpoints[COUNT]
    kept_texts = text_bytes(leak_watch.texts[texts_first:texts_last])
    growth = rss_last - rss_first
    figures = {
        "count": COUNT,
        "outcomes": per_outcome,
        "due_queue": sum(case.due for case in cases),
        "distinct_bodies": len({case.body for case in cases}),
        "generated_s": round(generated_s, 2),
        "published_s": round(published_s, 2),
        "processed_s": round(processed_s, 2),
        "rss_first_mb": round(rss_first / 2**20, 2),
        "rss_last_mb": round(rss_last / 2**20, 2),
        "log_texts_kept_mb": round(kept_texts / 2**20, 2),
        "rss_growth_mb": round(growth / 2**20, 3),
    }
    write_report(figures)
    assert growth <= MAX_RSS_GROWTH, figures


async def publish_late(
    exchange: aio_pika.abc.AbstractExchange, queue: str, job: Job, index: int
) -> None:
    await exchange.publish(
        aio_pika.Message(
            job.to_json(),
            headers={INDEX_HEADER: index},
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        queue,
    )


# -- hand-written ------------------------------------------------------------------

SENT_ROUND = "sent_round"


class Raw(bytes):
    """Bytes the test's publisher writes as they are, where pamqp would insist on UTF-8 text."""


class FarTime(datetime):
    """A time the test's publisher writes as 2**63 - 1 seconds: past any ``datetime``."""


class RawTable(dict[str, Any]):
    """A header table written from ``raw`` (its encoded entries), for names that are not UTF-8."""

    def __init__(self, raw: bytes) -> None:
        super().__init__()
        self.raw = raw


def let_publisher_write_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let this process's AMQP client write what another client may: bytes where text belongs,
    and timestamps no ``datetime`` can hold. Valid values encode as before (the worker's own
    publishes go through this too)."""
    short, table, stamp = (encode.METHODS[k] for k in ("shortstr", "table", "timestamp"))

    def shortstr(value: Any) -> bytes:
        return struct.pack("B", len(value)) + value if isinstance(value, Raw) else short(value)

    def field_table(value: Any) -> bytes:
        if isinstance(value, RawTable):
            return struct.pack(">I", len(value.raw)) + value.raw
        return table(value)

    def timestamp(value: Any) -> bytes:
        return struct.pack(">Q", 2**63 - 1) if isinstance(value, FarTime) else stamp(value)

    monkeypatch.setitem(encode.METHODS, "shortstr", shortstr)
    monkeypatch.setitem(encode.METHODS, "table", field_table)
    monkeypatch.setitem(encode.METHODS, "timestamp", timestamp)


def entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    """One encoded header table entry."""
    return struct.pack("B", len(name)) + name + kind + value


def plain_job(queue: str, **args: Any) -> bytes:
    return Job(handler="plain", queue=queue, args=args).to_json()


async def delayed_messages(topology: Topology) -> int:
    """How many messages wait anywhere in ``topology``'s delay queues."""
    total = 0
    for level in range(topology.delay.levels):
        for digit in range(1, DELAY_RADIX):
            state = await queue_state(topology.delay_queue(level, digit))
            total += state[0] if state else 0
    return total


@pytest.mark.timeout(60)
async def test_hand_written_hostile_messages_each_run_park_or_wait_as_they_should(
    secret_user: SecretUser, leak_watch: LeakWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    let_publisher_write_anything(monkeypatch)
    name, queue = f"awtest-hp-{uuid.uuid4().hex[:8]}", f"q.{uuid.uuid4().hex[:10]}"
    worker = AMQPWorker(secret_user.url(), name=name, queues=[queue], publish_timeout_s=10)
    topology = worker.topology
    history_junk = ["x", 5, {"attempt": "many"}, {"attempt": 1, "at": "never", "error_type": 1}]
    ten_kb_id = {"handler": "plain", "id": "i" * 10240}
    typed_bad = json.dumps({"handler": "typed", "args": {"n": "many"}}).encode()
    far = due_in_ms(timedelta(days=30))
    # (what, due queue?, body, message properties, headers, what must happen)
    cases: list[tuple[str, bool, bytes, dict[str, Any], dict[str, Any], str]] = [
        ("unknown handler", False, b'{"handler": "nobody"}', {}, {}, "unknown_handler"),
        ("empty body", False, b"", {}, {}, "invalid_json"),
        ("xml and gzip, really JSON", False, plain_job(queue, a=1),
         {"content_type": "application/xml", "content_encoding": "gzip"}, {}, RAN),
        ("JSON as text/plain", False, plain_job(queue, a=2), {"content_type": "text/plain"}, {}, RAN),
        ("really gzipped", False, gzip.compress(plain_job(queue, a=3)),
         {"content_encoding": "gzip"}, {}, "invalid_json"),
        ("UTF-16", False, plain_job(queue, a=4).decode().encode("utf-16"),
         {"content_encoding": "utf-16"}, {}, "invalid_json"),
        ("255-byte message_id", False, b"not json", {"message_id": "m" * 255}, {}, "invalid_json"),
        ("10 kB job id", False, json.dumps(ten_kb_id).encode(), {}, {}, "invalid_job"),
        ("aw-history a string", False, typed_bad, {}, {"aw-history": "not json"}, "invalid_args"),
        ("aw-history junk", False, b"[", {}, {"aw-history": history_junk}, "invalid_json"),
        ("aw-history bytes", False, plain_job(queue, a=5), {},
         {"aw-history": bytearray(b"\xff\xfe")}, RAN),
        ("aw-* headers of odd types", False, b'{"handler": 7}', {},
         {"aw-deliveries": "many", "aw-attempt": "x", "aw-failure-reason": "bogus",
          "aw-attempts": "lots", "aw-queue": {"a": 1}}, "invalid_job"),
        ("aw-deliveries negative", False, plain_job(queue, a=6), {}, {"aw-deliveries": -1}, RAN),
        ("aw-due-ms a string", True, plain_job(queue, a=7), {}, {"aw-due-ms": "123"}, RAN),
        ("aw-due-ms a table", True, plain_job(queue, a=8), {}, {"aw-due-ms": {"at": 1}}, RAN),
        ("aw-due-ms negative", True, plain_job(queue, a=9), {}, {"aw-due-ms": -1}, RAN),
        ("aw-due-ms true", True, plain_job(queue, a=10), {}, {"aw-due-ms": True}, RAN),
        ("aw-due-ms past year 9999", True, plain_job(queue, a=11), {}, {"aw-due-ms": 2**62}, RAN),
        ("aw-due-ms in 1.5 s", True, plain_job(queue, a=12), {},
         {"aw-due-ms": due_in_ms(timedelta(seconds=1.5))}, RAN),
        ("aw-due-ms in 30 days", True, plain_job(queue, a=13), {}, {"aw-due-ms": far}, SENT_ROUND),
        ("in 30 days, not JSON", True, b"\xff", {}, {"aw-due-ms": far}, "invalid_json"),
        ("timestamp past year 9999", False, plain_job(queue, a=14), {"timestamp": FarTime(9999, 1, 1, tzinfo=UTC)}, {}, RAN),
        ("message_id and type not UTF-8", False, plain_job(queue, a=15),
         {"message_id": Raw(b"\xff\xfe"), "type": Raw(b"\xc3")}, {}, RAN),
        ("not UTF-8 id, not JSON", False, b"{", {"message_id": Raw(b"id-\xff")}, {}, "invalid_json"),
        ("header name not UTF-8", False, plain_job(queue, a=16), {},
         {"raw": entry(b"\xff\xfea", b"I", struct.pack(">i", 5))}, RAN),
        ("header timestamp past 9999", False, b'{"handler": ""}', {},
         {"raw": entry(b"ts", b"T", struct.pack(">Q", 2**63 - 1))}, "invalid_job"),
    ]  # fmt: skip
    count = len(cases)
    ran, deliveries = [0] * count, [0] * count
    reasons: list[str | None] = [None] * count
    parked_ids: dict[int, str] = {}

    @worker.handler("plain")
    async def plain(args: dict[str, Any]) -> None:
        pass

    @worker.handler("typed")
    async def typed(args: Typed) -> None:
        pass

    @worker.hooks.after
    def after(event: JobEvent) -> None:
        index = index_of(event.headers)
        assert index is not None
        ran[index] += 1

    @worker.hooks.on_parked
    def on_parked(event: JobEvent) -> None:
        index = index_of(event.headers)
        assert index is not None
        assert event.reason is not None
        reasons[index] = event.reason.value
        parked_ids[index] = event.job_id

    count_deliveries(worker, deliveries)
    try:
        async with worker:
            async with await aio_pika.connect(secret_user.url()) as connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(topology.exchange, ensure=False)
                for index, (_, due, body, properties, headers, _) in enumerate(cases):
                    message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                    for key, value in properties.items():
                        setattr(message, key, value)
                    if "raw" in headers:
                        index_entry = encode.field_table({INDEX_HEADER: index})[4:]
                        message.headers = RawTable(headers["raw"] + index_entry)
                    else:
                        message.headers = {**headers, INDEX_HEADER: index}
                    if due:
                        await channel.default_exchange.publish(message, topology.due_queue(queue))
                    else:
                        await exchange.publish(message, queue)
                # A message_id of 10 kB cannot even be sent: AMQP short strings end at 255 bytes.
                with pytest.raises(TypeError, match="255"):
                    await exchange.publish(aio_pika.Message(b"{}", message_id="m" * 10240), queue)
            settled = [i for i, case in enumerate(cases) if case[5] != SENT_ROUND]
            for _ in range(300):
                if all(ran[i] or reasons[i] for i in settled):
                    break
                await asyncio.sleep(0.05)
            waiting = await delayed_messages(topology)
            failed = {one.id: one for one in await worker.failed.list()}
        leak_watch.see(worker, worker.settings)
        outcomes = {
            what: (RAN if ran[i] == 1 and not reasons[i] else reasons[i] or SENT_ROUND)
            for i, (what, *_) in enumerate(cases)
        }
        assert outcomes == {case[0]: case[5] for case in cases}
        assert deliveries == [1] * count
        assert waiting == 1  # the job due in 30 days, and only it, went round the delay topology
        assert len(failed) == sum(1 for case in cases if case[5] not in (RAN, SENT_ROUND))
        by_what = {cases[i][0]: failed[parked_ids[i]] for i in parked_ids}
        assert by_what["255-byte message_id"].id == "m" * 255
        assert by_what["not UTF-8 id, not JSON"].id == "id-\ufffd"
        assert "at most 255 bytes" in by_what["10 kB job id"].error_message
        assert len(by_what["aw-history a string"].history) == 1  # its one real attempt
        assert by_what["aw-history junk"].history == []
        assert by_what["aw-* headers of odd types"].attempts == 1
        bodies = {case[0]: case[2] for case in cases}
        assert all(record.body == bodies[what] for what, record in by_what.items())
        for name_ in (topology.work_queue(queue), topology.due_queue(queue)):
            state = await queue_state(name_)
            assert state is not None
            assert state[0] == 0, name_
    finally:
        await worker.stop(timeout_s=0)
        await delete_topology(Topology(name=name), [queue])
