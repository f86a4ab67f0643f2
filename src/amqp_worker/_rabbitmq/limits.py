"""Rate and concurrency limits across the fleet, on RabbitMQ alone: where limited jobs wait.

A job of a handler registered with ``rate`` or ``concurrency`` does not wait
in worker memory. When it reaches a worker through the usual queues (work,
due, quarantine), the worker moves it, confirmed, to the handler's *limit
queue* (quorum, counting deliveries), and acks the original:

- with ``concurrency=N``, to one of N *lanes* ``<name>.limit.<queue>.<H>.<i>``
  (round robin), each with a single active consumer and a prefetch of 1: at
  most one job per lane runs at a time fleet-wide, so at most N. When the
  lane's consumer dies, its job goes back to the head and another worker's
  consumer takes over.
- with only a ``rate``, to ``<name>.limit.<queue>.<H>``, which every worker
  consumes with a prefetch of its ``max_concurrency``.

A job from a limit queue (with a ``rate``) starts only once its worker has a
free handler slot and has taken a token (``basic.get``) from
``<name>.tokens.<H>``, which one leader fills at the rate
(:mod:`amqp_worker._rabbitmq.token_leader`). A worker holds at most its
prefetch of a limit queue, one job per handler at a time waiting for a
token; the rest wait in the broker. A failed attempt is
retried through the delay topology as usual, and moved again when due: every
attempt takes a token and a lane.

With ``limit_key``, the limits hold per key value. ``concurrency=N``: the
job goes to key lane ``crc32(key) % 16`` (``<name>.limit.<queue>.<H>.k<i>``),
single active consumer with a prefetch of N: at most N jobs of a lane, so of
a key, run at once (keys that share a lane share its N). ``rate``: before it
starts, the job takes a start in its key's window
(:mod:`amqp_worker._rabbitmq.key_windows`); over the rate, it is snoozed:
re-published through the delay topology (``aw-snoozes`` doubles its wait up
to the window; ``aw-waiting-since-ms`` keeps its first due time for
``max_age_s``), and acked.

A job with a ``partition_key`` is not moved (that would break its order):
it takes a token in place; its partition already runs one at a time. Per-key
limits do not apply to it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import zlib
from collections.abc import Awaitable, Callable

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractQueue
from pydantic import ValidationError

from amqp_worker._core.controls import WAITING_SINCE_HEADER, waiting_since_ms
from amqp_worker._core.job import Job
from amqp_worker._core.limits import Limits, snooze_s
from amqp_worker._core.registry import Registry
from amqp_worker.errors import BrokerError

from .broker import Broker
from .consumer import Delivery, QueueConsumer
from .extra_topology import limit_queue_arguments, limit_queue_names, token_queue
from .key_windows import KeyWindows
from .messages import carried_headers
from .publishing import now_ms
from .settle import Settler
from .token_leader import TokenLeader

#: How many times a job was snoozed over its key's rate (its snooze doubles each time).
SNOOZES_HEADER = "aw-snoozes"

__all__ = ["SNOOZES_HEADER", "RabbitLimits", "lane_prefetch"]

logger = logging.getLogger("amqp_worker")

#: Longest pause between two looks for a token (or a free handler slot).
MAX_POLL_S = 0.25
#: Shortest pause between two looks.
MIN_POLL_S = 0.005
#: Pause after a token look failed (a reconnect), before the next.
RETRY_TAKE_S = 1.0


def lane_prefetch(limits: Limits, max_concurrency: int) -> int:
    """Jobs in flight per consumer of a limit queue: one per lane, N per key lane, else many."""
    if limits.concurrency is None:
        return max_concurrency
    return limits.concurrency if limits.key is not None else 1


class RabbitLimits:
    """Moves limited jobs to their limit queues, consumes those, and hands out tokens."""

    def __init__(
        self,
        broker: Broker,
        registry: Registry,
        settler: Settler,
        *,
        running: Callable[[], bool],
        has_room: Callable[[], bool],
    ) -> None:
        self._broker = broker
        self._registry = registry
        self._settler = settler
        self._running = running
        self._has_room = has_room
        self._turn = itertools.count()
        self._leaders: list[TokenLeader] = []
        self._token_channel: AbstractChannel | None = None
        self._token_queues: dict[str, AbstractQueue] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._windows = KeyWindows(broker)
        self._keyed_rates = False

    def of(self, job: Job) -> Limits | None:
        """The limits of ``job``'s handler; None if it has none (or is not registered)."""
        spec = self._registry.handlers.get(job.handler)
        return spec.limits if spec is not None else None

    async def move(self, queue: str, message: Delivery, job: Job) -> None:
        """Move ``job`` to its limit queue (a lane, round robin), confirmed; then ack ``message``."""
        limits = self.of(job)
        assert limits is not None
        names = limit_queue_names(self._broker.topology, queue, job.handler, limits)
        if limits.key is not None:
            # A key's jobs share one lane, whose N in flight bound that key (and the
            # keys hashed beside it) to N running at once.
            target = names[zlib.crc32(limits.key_of(job).encode("utf-8")) % len(names)]
        else:
            target = names[next(self._turn) % len(names)]
        ensure = self._ensure(queue, job.handler, limits)
        await self._settler.hold(message, job, target, ensure)

    async def _ensure(
        self, queue: str, handler: str, limits: Limits, channel: AbstractChannel | None = None
    ) -> list[str]:
        """Declare the limit queues of ``handler`` from ``queue`` (once, unless ``channel``)."""
        max_deliveries = self._broker.settings.max_deliveries
        lane = limits.concurrency is not None
        arguments = limit_queue_arguments(self._broker.topology, queue, max_deliveries, lane=lane)
        names = limit_queue_names(self._broker.topology, queue, handler, limits)
        key = f"limits:{queue}:{handler}"
        await self._broker.declarations.declare_dead_lettering(
            key, queue, names, arguments, channel
        )
        return names

    async def start(
        self,
        queues: tuple[str, ...],
        on_limited: Callable[[str, str, Delivery], Awaitable[None]],
    ) -> tuple[list[AbstractChannel], list[QueueConsumer]]:
        """Start the token leaders and consume every limit queue; (channels, consumers).

        Each prefetch gets a channel of its own (:func:`lane_prefetch`): a
        robust channel restores only its last QoS after a reconnect.
        """
        limited = {n: s.limits for n, s in self._registry.handlers.items() if s.limits}
        # Fixed from here: a limited handler cannot be registered on a running worker.
        self._keyed_rates = any(x.key is not None and x.rate is not None for x in limited.values())
        if not limited:
            return [], []
        self._token_channel = await self._broker.channel()
        channels: dict[int, AbstractChannel] = {}
        consumers: list[QueueConsumer] = []
        for handler, limits in sorted(limited.items()):
            if limits.rate_per_s is not None and limits.key is None:
                leader = TokenLeader(self._broker, handler, limits)
                await leader.start()
                self._leaders.append(leader)
            prefetch = lane_prefetch(limits, self._broker.settings.max_concurrency)
            channel = channels.get(prefetch)
            if channel is None:
                channel = channels[prefetch] = await self._broker.channel()
                await channel.set_qos(prefetch_count=prefetch)
            for queue in queues:
                for name in await self._ensure(queue, handler, limits, channel):
                    callback = functools.partial(on_limited, queue, handler)
                    consumer = QueueConsumer(channel, name, callback)
                    await consumer.start()
                    consumers.append(consumer)
        logger.info(
            "limited handlers: %s",
            ", ".join(f"{name} ({limits.describe()})" for name, limits in sorted(limited.items())),
        )
        return [self._token_channel, *channels.values()], consumers

    async def stop(self) -> None:
        """Stop the token leaders (each hands its baton on)."""
        leaders, self._leaders = self._leaders, []
        for leader in leaders:
            await leader.stop()
        self._token_channel = None
        self._token_queues.clear()

    async def take(self, handler: str) -> bool:
        """Wait for a free handler slot and a token of ``handler``; False if the worker stopped.

        Without a ``rate``, only the slot. One waiter per handler at a time;
        the next job waits for this one's token (in the worker, one at most
        per handler; the rest in the broker).
        """
        spec = self._registry.handlers.get(handler)
        limits = spec.limits if spec is not None else None
        # A per-key rate is taken in the key's window (admit), not from the tokens.
        keyed = limits is not None and limits.key is not None
        rate_per_s = limits.rate_per_s if limits is not None and not keyed else None
        poll_s = min(max(1.0 / rate_per_s, MIN_POLL_S), MAX_POLL_S) if rate_per_s else MIN_POLL_S
        async with self._locks.setdefault(handler, asyncio.Lock()):
            while self._running():
                # A free slot first: a token taken for a job that then waits for a slot
                # would let the job start later, beside the next token's: a burst.
                if self._has_room() and (rate_per_s is None or await self._token(handler)):
                    return True
                await asyncio.sleep(
                    poll_s * random.uniform(0.5, 1.5)
                )  # jitter: workers do not poll in step
            return False

    async def admit(self, queue: str, message: Delivery) -> bool:
        """False if the job is over its key's rate: then it is snoozed (re-published, acked).

        A job without a per-key rate, with a ``partition_key`` (its order
        comes first), or that is not a job (it is parked after) is let go.
        """
        if not self._keyed_rates:
            return True  # no handler has one: no second parse of every limited job's body
        try:
            job = Job.from_json(message.body)
        except ValidationError:
            return True
        limits = self.of(job)
        if limits is None or limits.key is None or limits.rate is None or job.partition_key:
            return True
        try:
            if await self._windows.try_start(job.handler, limits.key_of(job), limits):
                return True
        except BrokerError as exc:
            logger.warning("could not take a start of job %s in its key's window: %s", job.id, exc)
        headers = carried_headers(message.headers)
        snoozes = headers.get(SNOOZES_HEADER)
        snoozes = snoozes if isinstance(snoozes, int) and not isinstance(snoozes, bool) else 0
        headers[SNOOZES_HEADER] = snoozes + 1
        headers.setdefault(WAITING_SINCE_HEADER, waiting_since_ms(job, message.headers))
        delay_ms = int(snooze_s(limits, snoozes) * random.uniform(1.0, 1.5) * 1000)
        await self._settler.republish(message, job, headers, int(now_ms()) + delay_ms, pause=False)
        return False

    async def _token(self, handler: str) -> bool:
        """Take one token of ``handler`` (``basic.get``, no ack); False if there is none."""
        try:
            queue = self._token_queues.get(handler)
            if queue is None:
                assert self._token_channel is not None
                name = token_queue(self._broker.topology, handler)
                queue = await self._token_channel.get_queue(name, ensure=False)
                self._token_queues[handler] = queue
            return await queue.get(no_ack=True, fail=False) is not None
        except (BrokerError, amqp_errors.AMQPError, RuntimeError) as exc:
            logger.warning("could not take a rate token of handler %r: %s", handler, exc)
            await asyncio.sleep(RETRY_TAKE_S)
            return False
