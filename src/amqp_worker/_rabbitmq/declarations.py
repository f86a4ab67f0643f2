"""Declaring what jobs need on the broker: exchanges, queues and bindings, once per process.

Declarations go through a *topology* channel of their own, so a 406 from a
conflicting declaration never closes a channel that publishes or consumes. It
is robust: after a reconnect, aio-pika re-declares everything declared through
it. A conflicting declaration (406) becomes
:class:`~amqp_worker.errors.TopologyConflict`, a refused one (403)
:class:`~amqp_worker.errors.AccessRefused`.

**Queues declared by an older amqp-worker** are adopted as they are. RabbitMQ
refuses to re-declare a queue with other arguments, and cannot add arguments
to an existing queue. This version gives quorum queues that hold jobs an
explicit ``x-delivery-limit`` and dead-lettering into the failed-jobs queue
(so RabbitMQ 4.x, whose default limit is 20, never drops a job). A deployment
whose quorum queues were declared by the previous version lacks them: rather
than fail to start, the worker uses the queue as it is and logs a WARNING with
the ``rabbitmqctl set_policy`` command that adds the same protection to the
existing queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from amqp_worker.errors import AccessRefused, TopologyConflict

from .topology import DELAY_RADIX, DELIVERY_LIMIT_ARGUMENTS, Topology

__all__ = ["Declarations", "legacy_arguments", "upgrade_policy", "warn_legacy_queue"]

logger = logging.getLogger("amqp_worker")


class Declarations:
    """The declarations of one worker's topology, each made once per process.

    ``open_channel`` opens a new channel on the worker's connection; the
    topology channel is opened on first use and again after it closed.
    """

    def __init__(
        self, topology: Topology, open_channel: Callable[[], Awaitable[AbstractChannel]]
    ) -> None:
        self.topology = topology
        self._open_channel = open_channel
        self._lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._topology_channel: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        # Queues that exist with older arguments than ours, as the broker accepted them.
        self._accepted: dict[str, dict[str, Any]] = {}

    async def _channel(self) -> AbstractChannel:
        channel = self._topology_channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._channel_lock:
            if self._topology_channel is None or self._topology_channel.is_closed:
                self._topology_channel = await self._open_channel()
            return self._topology_channel

    async def close(self, *, close_channel: bool) -> None:
        """Forget every declaration; close the topology channel if ``close_channel``.

        A connection the worker made closes its channels with it; on a
        connection the user handed in, the channel is closed here.
        """
        channel, self._topology_channel = self._topology_channel, None
        self._declared.clear()
        if close_channel and channel is not None and not channel.is_closed:
            await channel.close()

    async def declare_exchange(
        self, name: str, kind: ExchangeType, channel: AbstractChannel | None = None
    ) -> AbstractExchange:
        """Declare a durable exchange, translating a 406 into :class:`TopologyConflict`."""
        channel = channel or await self._channel()
        try:
            return await channel.declare_exchange(name, kind, durable=True)
        except amqp_errors.ChannelPreconditionFailed as exc:
            raise TopologyConflict.from_reply("exchange", name, exc, {"type": kind.value}) from None

    async def declare_queue(
        self,
        name: str,
        arguments: dict[str, Any],
        bindings: Iterable[tuple[str, str | None, dict[str, Any] | None]] = (),
        channel: AbstractChannel | None = None,
    ) -> AbstractQueue:
        """Declare a durable queue and its ``(exchange, routing_key, arguments)`` bindings.

        A quorum queue an older version declared without this version's delivery
        limit is used as it is, with a WARNING (see :func:`legacy_arguments`).
        """
        arguments = self._accepted.get(name, arguments)
        channel = channel or await self._channel()
        try:
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        except amqp_errors.ChannelPreconditionFailed as exc:
            legacy = legacy_arguments(arguments, exc)
            if legacy is None:
                raise TopologyConflict.from_reply("queue", name, exc, arguments) from None
            # The 406 closed that channel; the topology channel reopens on demand.
            queue = await self.declare_queue(name, legacy, channel=await self._channel())
            self._accepted[name] = legacy
            warn_legacy_queue(name, arguments)
        for exchange, routing_key, binding_args in bindings:
            await queue.bind(exchange, routing_key, arguments=binding_args)
        return queue

    async def once(self, key: str, declare: Callable[[], Awaitable[None]]) -> None:
        """Run ``declare`` unless it ran under ``key`` in this process (see :meth:`forget_key`)."""
        await self._once(key, declare)

    def forget_key(self, key: str) -> None:
        """Forget that what was declared under ``key`` exists, so the next use declares it again."""
        self._declared.discard(key)

    async def _once(self, key: str, declare: Callable[[], Awaitable[None]]) -> None:
        # Declarations are cached per process: one round trip per queue, not per job.
        if key in self._declared:
            return
        async with self._lock:
            if key not in self._declared:
                try:
                    await declare()
                except amqp_errors.ChannelAccessRefused as exc:
                    kind, _, queue = key.partition(":")
                    what = f"the {kind} queue of {queue!r}" if queue else f"the {kind}"
                    raise AccessRefused.from_reply(f"declare {what}", exc) from None
                self._declared.add(key)

    async def ensure_work_queue(self, queue: str) -> None:
        """Make sure jobs for ``queue`` have somewhere to go, even before any worker ran."""
        if f"work:{queue}" in self._declared:
            return  # every perform asks: answer without building the declaration
        topology = self.topology

        async def declare() -> None:
            await self.declare_exchange(topology.exchange, ExchangeType.DIRECT)
            await self.declare_queue(
                topology.work_queue(queue),
                topology.work_queue_arguments(queue),
                [(topology.exchange, queue, None)],
            )

        if topology.queue_type == "quorum":
            # Its dead-letter target: a job past the delivery limit must land somewhere.
            await self.ensure_failed_queue(queue)
        await self._once(f"work:{queue}", declare)

    async def ensure_due_queue(self, queue: str) -> None:
        """Make sure delayed jobs for ``queue`` can route all the way to its due queue."""
        await self.ensure_delays()
        await self._ensure_due(queue)

    async def ensure_delays(self) -> None:
        """Make sure the delay topology (every level's exchange, queues and bindings) exists."""
        topology = self.topology

        async def declare_delays() -> None:
            due = await self.declare_exchange(topology.due_exchange, ExchangeType.DIRECT)
            # Bottom level first: every dead-letter target exists before anything can reach it.
            below = due
            for level in range(topology.delay.levels):
                exchange = await self.declare_exchange(
                    topology.delay_exchange(level), ExchangeType.HEADERS
                )
                queues = {
                    topology.delay_queue(level, digit): await self.declare_queue(
                        topology.delay_queue(level, digit),
                        topology.delay_queue_arguments(level, digit),
                    )
                    for digit in range(1, DELAY_RADIX)
                }
                for binding in topology.delay_bindings(level):
                    destination = queues[binding.destination] if binding.kind == "queue" else below
                    await destination.bind(exchange, "", arguments=binding.arguments)
                below = exchange

        await self._once("delays", declare_delays)

    async def _ensure_due(self, queue: str) -> None:
        """The due exchange, and ``queue``'s due queue bound to it."""
        topology = self.topology

        async def declare_due() -> None:
            await self.declare_exchange(topology.due_exchange, ExchangeType.DIRECT)
            await self.declare_queue(
                topology.due_queue(queue),
                topology.work_queue_arguments(queue),
                [(topology.due_exchange, queue, None)],
            )

        await self._once(f"due:{queue}", declare_due)

    async def ensure_failed_queue(self, queue: str) -> None:
        """Make sure the failed-jobs queue of ``queue`` exists."""
        topology = self.topology

        async def declare() -> None:
            await self.declare_queue(
                topology.failed_queue(queue), topology.failed_queue_arguments()
            )

        await self._once(f"failed:{queue}", declare)

    async def declare_dead_lettering(
        self,
        key: str,
        queue: str,
        names: Iterable[str],
        arguments: dict[str, Any],
        channel: AbstractChannel | None = None,
    ) -> None:
        """Declare ``names``, queues that dead-letter into ``queue``'s failed jobs, and that one.

        Once per process under ``key``; with ``channel`` (a consumer's, which
        re-declares its queues after a reconnect) every time, on that channel.
        """

        async def declare() -> None:
            for name in names:
                await self.declare_queue(name, arguments, channel=channel)

        # Their dead-letter target first, and outside once(): its lock is not reentrant.
        await self.ensure_failed_queue(queue)
        if channel is not None:
            await declare()
        else:
            await self._once(key, declare)

    async def ensure_quarantine_queue(self, queue: str) -> None:
        """Make sure the quarantine queue of ``queue`` exists."""
        topology = self.topology

        async def declare() -> None:
            await self.declare_queue(
                topology.quarantine_queue(queue), topology.work_queue_arguments(queue)
            )

        await self._once(f"quarantine:{queue}", declare)

    async def consumer_queues(
        self, queue: str, channels: tuple[AbstractChannel, AbstractChannel, AbstractChannel]
    ) -> tuple[AbstractQueue, AbstractQueue, AbstractQueue]:
        """Declare everything a consumer of ``queue`` needs; return its work, due and quarantine queues.

        The failed-jobs queue, the due exchange, the exchanges and bindings
        are declared (once per process) on the topology channel; the delay
        topology is not (see :meth:`ensure_delays`), so a worker consumes
        while it is declared. The consumed queues are declared again on their
        consumer ``channels`` (work, due, quarantine): a robust channel
        re-declares what was declared through it, and restores its consumers,
        after a reconnect.
        """
        topology = self.topology
        await self.ensure_failed_queue(queue)
        await self.ensure_quarantine_queue(queue)
        await self._ensure_due(queue)
        await self.ensure_work_queue(queue)
        arguments = topology.work_queue_arguments(queue)
        names = (topology.work_queue, topology.due_queue, topology.quarantine_queue)
        work, due, quarantine = [
            await self.declare_queue(name(queue), arguments, channel=channel)
            for name, channel in zip(names, channels, strict=True)
        ]
        return work, due, quarantine

    def forget(self, queue: str) -> None:
        """Forget that ``queue``'s queues were declared, so the next use declares them again."""
        self._declared -= {f"{kind}:{queue}" for kind in ("work", "due", "failed", "quarantine")}


# -- queues declared by an older version ---------------------------------------

_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")
_NONE_BEFORE = re.compile(r"but current is none")


def legacy_arguments(wanted: dict[str, Any], exc: BaseException) -> dict[str, Any] | None:
    """The arguments to declare with instead of ``wanted`` after the broker's 406 ``exc``.

    Only when the queue exists *without* one of this version's new quorum
    arguments (the reply says ``current is none``); then ``wanted`` minus
    those. None for any other conflict, which stays an error.
    """
    reply = str(exc.args[0]) if exc.args else str(exc)
    match = _INEQUIVALENT.search(reply)
    if match is None or match.group(1) not in DELIVERY_LIMIT_ARGUMENTS:
        return None
    if not _NONE_BEFORE.search(reply) or wanted.get("x-queue-type") != "quorum":
        return None
    return {key: value for key, value in wanted.items() if key not in DELIVERY_LIMIT_ARGUMENTS}


def upgrade_policy(name: str, wanted: dict[str, Any]) -> str:
    """The ``rabbitmqctl set_policy`` command that gives queue ``name`` what ``wanted`` adds."""
    definition = {
        key.removeprefix("x-"): value
        for key, value in sorted(wanted.items())
        if key in DELIVERY_LIMIT_ARGUMENTS
    }
    pattern = "^" + re.escape(name) + "$"
    return (
        f"rabbitmqctl set_policy --apply-to quorum_queues amqp-worker-{name} "
        f"'{pattern}' '{json.dumps(definition, separators=(',', ':'))}'"
    )


def warn_legacy_queue(name: str, wanted: dict[str, Any]) -> None:
    """Say that ``name`` runs without this version's delivery limit, and how to add it."""
    logger.warning(
        "quorum queue %r was declared by an older amqp-worker, without a delivery limit and "
        "dead-lettering into the failed-jobs queue: on RabbitMQ 4.x a job delivered more "
        "than 20 times would be dropped from it. Add them with a policy: %s",
        name,
        upgrade_policy(name, wanted),
    )
