"""Queue counts and declarations on kept channels, for the group queues' many short asks.

Every group member asks its group queue's message count after reporting,
so asks are pooled: callers that arrive while an ask of the same queue is
on the wire share the next one. The asks go over :data:`ERRAND_CHANNELS`
kept plain channels, one ask per channel at a time: a passive declare of a
queue that is gone (404) closes its channel, and must fail only the ask
that caused it. Kept, not opened per ask: a channel number closed and at
once reused left RabbitMQ 3.10 answering nothing on the new channel now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiormq.exceptions as amqp_errors
from aiormq.abc import AbstractChannel as UnderlyingChannel

from amqp_worker.errors import TopologyConflict

from .broker import Broker

__all__ = ["ERRAND_CHANNELS", "QueueCounts"]

#: Kept channels for counts and declarations: asks go in parallel, one per channel.
ERRAND_CHANNELS = 4


@dataclass(slots=True)
class _Errand:
    """A kept channel for one ask at a time; None until opened, or after the broker closed it."""

    channel: UnderlyingChannel | None = None


class QueueCounts:
    """Pooled message counts and declarations of queues, on kept errand channels."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._next_count: dict[str, asyncio.Future[int | None]] = {}
        self._count_on_wire: dict[str, asyncio.Future[int | None]] = {}
        self._counting: set[asyncio.Future[None]] = set()
        self._errands: asyncio.Queue[_Errand] = asyncio.Queue()
        for _ in range(ERRAND_CHANNELS):
            self._errands.put_nowait(_Errand())

    @contextlib.asynccontextmanager
    async def _errand(self) -> AsyncIterator[_Errand]:
        """One of the kept errand channels, for one ask at a time (a 404 or 406 closes it,
        and must fail only the ask that caused it)."""
        errand = await self._errands.get()
        try:
            if errand.channel is None or errand.channel.is_closed:
                # Kept, not opened per ask: a channel number closed and at once reused
                # left RabbitMQ 3.10 answering nothing on the new channel now and then.
                errand.channel = await self._broker.plain_channel()
            yield errand
        finally:
            self._errands.put_nowait(errand)

    async def declare(self, name: str, arguments: dict[str, Any]) -> None:
        async with self._errand() as errand:
            assert errand.channel is not None
            try:
                await errand.channel.queue_declare(name, durable=True, arguments=arguments)
            except amqp_errors.ChannelPreconditionFailed as exc:
                errand.channel = None
                raise TopologyConflict.from_reply("queue", name, exc, arguments) from None

    async def count(self, name: str) -> int | None:
        """Messages ready in queue ``name``, asked after this call; None if there is no such queue.

        Every member asks, so asks are pooled: callers that arrive while one
        ask of the same queue is on the wire share the next one, which is sent
        after all of them arrived (so each answer counts each caller's marker).
        """
        batch = self._next_count.get(name)
        if batch is None:
            batch = self._next_count[name] = asyncio.get_running_loop().create_future()
            batch.add_done_callback(_retrieved)
            runner = asyncio.ensure_future(self._count_batch(name, batch))
            self._counting.add(runner)
            runner.add_done_callback(self._counting.discard)
        return await asyncio.shield(batch)

    async def _count_batch(self, name: str, batch: asyncio.Future[int | None]) -> None:
        previous = self._count_on_wire.get(name)
        if previous is not None:
            await asyncio.wait({previous})
        if self._next_count.get(name) is batch:
            del self._next_count[name]  # closed: later callers start the next batch
        on_wire = self._count_on_wire[name] = asyncio.ensure_future(self._count_now(name))
        try:
            batch.set_result(await on_wire)
        except BaseException as exc:  # the callers get it
            batch.set_exception(exc)
        finally:
            if self._count_on_wire.get(name) is on_wire:
                del self._count_on_wire[name]

    async def _count_now(self, name: str) -> int | None:
        async with self._errand() as errand:
            assert errand.channel is not None
            try:
                ok = await errand.channel.queue_declare(name, passive=True)
            except amqp_errors.ChannelNotFoundEntity:
                errand.channel = None  # the broker closed it
                return None
            return int(ok.message_count or 0)

    async def close(self) -> None:
        """Close the kept channels (the connection is closing)."""
        for _ in range(ERRAND_CHANNELS):
            errand = await self._errands.get()
            channel, errand.channel = errand.channel, None
            if channel is not None:
                await Broker.close_plain_channel(channel)
            self._errands.put_nowait(errand)


def _retrieved(future: asyncio.Future[int | None]) -> None:
    """Mark a count's error as seen: its callers may all have been cancelled meanwhile."""
    if not future.cancelled():
        future.exception()
