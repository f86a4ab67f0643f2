"""A failed-jobs queue of N parked jobs for bench/dashboard.py, and a raw reader of it.

The jobs look like the worker parks them: a Job JSON body, ``message_id`` the
job id, and :func:`amqp_worker._core.failures.failure_headers` built from real
exceptions (raised and caught, so each has a traceback) with a history of one
to three attempts. Every name starts with ``awbench-<hex>``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from amqp_worker import Job
from amqp_worker._core.failures import AttemptRecord, FailureReason, failure_headers
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.topology import Topology

QUEUE = "emails"
HANDLERS = ("send_email", "resize_image", "charge_card", "sync_crm", "render_pdf")
#: Exactly RARE_COUNT jobs (spread over the queue) carry RARE_WORD in their last error.
RARE_WORD = "zanzibar"
RARE_COUNT = 37
IN_FLIGHT = 256
READ_TIMEOUT_S = 300.0

ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (ConnectionError, "SMTP server smtp{m}.example.net refused the connection (421)"),
    (TimeoutError, "request to https://api.example.com/v2/items/{i} timed out after 30 s"),
    (ValueError, "invalid address for user {i}: 'user{i}@@example.com'"),
    (KeyError, "customer {i} has no field 'billing_country'"),
    (RuntimeError, "render failed on page {m}: font 'Inter-{m}' not found"),
)


@dataclass
class Seed:
    """What a run parks: the names, and the parked jobs' ids in queue order."""

    url: str
    prefix: str = field(default_factory=lambda: f"awbench-{uuid.uuid4().hex[:12]}")
    ids: list[str] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    rare_ids: list[str] = field(default_factory=list)

    @property
    def settings(self) -> AMQPSettings:
        return AMQPSettings(url=self.url, name=self.prefix, queues=(QUEUE,))

    @property
    def topology(self) -> Topology:
        return Topology(name=self.prefix)

    @property
    def failed_queue(self) -> str:
        return self.topology.failed_queue(QUEUE)

    def names(self) -> tuple[list[str], list[str]]:
        """(queues, exchanges) the run may have declared: the worker topology of QUEUE."""
        t = self.topology
        queues = [t.work_queue(QUEUE), t.due_queue(QUEUE), t.failed_queue(QUEUE)]
        queues += [t.quarantine_queue(QUEUE)]
        queues += t.delay_queues()
        exchanges = [t.exchange, t.due_exchange]
        exchanges += [t.delay_exchange(level) for level in range(t.delay.levels)]
        return queues, exchanges


def _raise(kind: type[Exception], message: str, depth: int) -> None:
    if depth:
        _raise(kind, message, depth - 1)
    raise kind(message)


def _exception(i: int, attempt: int, rare: bool) -> Exception:
    kind, template = ERRORS[(i + attempt) % len(ERRORS)]
    message = template.format(i=i, m=i % 97)
    if rare:
        message += f" (relay {RARE_WORD}-{i % 7})"
    try:
        _raise(kind, message, depth=3 + i % 5)
    except Exception as exc:
        return exc
    raise AssertionError("unreachable")


def parked(seed: Seed, i: int, rare: bool) -> aio_pika.Message:
    """Job ``i`` as the worker would park it after 1-3 failed attempts."""
    handler = HANDLERS[i % len(HANDLERS)]
    args = {"user_id": i, "to": f"user{i}@example.com", "template": "welcome", "retries": 3}
    job = Job(queue=QUEUE, handler=handler, args=args)
    attempts = 1 + i % 3
    errors = [_exception(i, a, rare and a == attempts) for a in range(1, attempts + 1)]
    history = [AttemptRecord.of(a, exc) for a, exc in enumerate(errors, 1)]
    headers = failure_headers(FailureReason.HANDLER_ERROR, QUEUE, errors[-1], history=history)
    seed.ids.append(job.id)
    seed.handlers.append(handler)
    if rare:
        seed.rare_ids.append(job.id)
    return aio_pika.Message(
        job.model_dump_json().encode(),
        headers=headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=job.id,
        type=handler,
        timestamp=job.enqueued_at,
    )


async def seed_failed(seed: Seed, connection: AbstractConnection, n: int) -> float:
    """Declare the worker topology of QUEUE, park ``n`` jobs (confirmed); publish seconds."""
    broker = Broker(seed.settings)
    try:
        for ensure in (
            broker.declarations.ensure_failed_queue,
            broker.declarations.ensure_quarantine_queue,
        ):
            await ensure(QUEUE)
        await broker.declarations.ensure_due_queue(QUEUE)
        await broker.declarations.ensure_work_queue(QUEUE)
    finally:
        await broker.close()
    count = min(RARE_COUNT, n)
    rare = set(range(0, n, max(1, n // count))[:count])
    messages = [parked(seed, i, i in rare) for i in range(n)]
    channel = await connection.channel(publisher_confirms=True)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(message: aio_pika.Message) -> None:
        async with slots:
            await channel.default_exchange.publish(message, seed.failed_queue, mandatory=True)

    started = time.perf_counter()
    await asyncio.gather(*(one(message) for message in messages))
    elapsed = time.perf_counter() - started
    await channel.close()
    return elapsed


async def read_ids(connection: AbstractConnection, queue: str) -> tuple[list[str], float]:
    """Every message id of ``queue`` in order, nothing acked (prefetch 0, then close); seconds.

    The floor for any browse: plain aio-pika, no decoding beyond its own.
    """
    started = time.perf_counter()
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=0)
    declared = await channel.declare_queue(queue, passive=True)
    wanted = declared.declaration_result.message_count or 0
    ids: list[str] = []
    done = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        ids.append(message.message_id or "")
        if len(ids) >= wanted:
            done.set()

    if wanted:
        await declared.consume(on_message, no_ack=False)
        await asyncio.wait_for(done.wait(), READ_TIMEOUT_S)
    await channel.close()  # every unacked message goes back to its place
    return ids, time.perf_counter() - started
