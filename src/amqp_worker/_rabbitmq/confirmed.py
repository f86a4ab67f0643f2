"""The publish channel: persistent, confirmed, ``mandatory`` publishing with typed errors.

Publishing waits for the broker's confirm. A nack, a return or a refused
permission becomes a typed :class:`~amqp_worker.errors.BrokerError`; a lost
connection is waited out up to ``publish_timeout_s``, then reported. Success
is never reported for a message that was not confirmed.

The channel is aio-pika's robust one, so it reopens after a reconnect; the
publishes themselves go below it, to a :class:`~amqp_worker._rabbitmq.confirms.ConfirmWindow`
on its aiormq channel: the publishes of one loop pass are written together
and confirmed as a batch (bench/README.md has what that saves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiormq
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel
from aiormq import spec

from amqp_worker.errors import (
    AccessRefused,
    BrokerUnavailable,
    JobTooLarge,
    PublishNacked,
    PublishReturned,
)

from .confirms import Batch, ConfirmWindow, Failure
from .connect import connection_lost
from .frames import encode_properties
from .messages import JobMessage

__all__ = ["ConfirmedPublisher", "Publish", "Publishable"]

#: RabbitMQ's reply to a body over its max_message_size (406 PRECONDITION_FAILED), with the limit.
_TOO_LARGE = re.compile(r"message size \d+ is larger than configured max size (\d+)")

logger = logging.getLogger("amqp_worker")

#: A pause between attempts while the connection is away.
RETRY_PAUSE_S = 0.05


class Publishable(Protocol):
    """What can be published: aio-pika's ``Message``, or a prebuilt :class:`~amqp_worker._rabbitmq.messages.JobMessage`."""

    @property
    def body(self) -> bytes: ...

    @property
    def properties(self) -> spec.Basic.Properties: ...

    @property
    def message_id(self) -> str | None: ...


#: One publish: exchange, routing key, message.
Publish = tuple[str, str, Publishable]


def _wire(message: Publishable) -> tuple[bytes, str]:
    """The message's encoded properties and its message id (one is made up if it has none)."""
    if type(message) is JobMessage:
        return message.encoded, message.message_id
    properties = message.properties
    if not properties.message_id:
        # As aiormq does: a return names only the message, so every message needs an id.
        properties.message_id = uuid.uuid4().hex
    return encode_properties(properties), properties.message_id


class _Lost(Exception):
    """A publish met a lost channel or connection: wait for it and publish again."""


class ConfirmedPublisher:
    """One confirming publish channel at a time, opened with ``open_channel`` on first use.

    ``broker`` names the broker in errors (never with credentials).
    """

    def __init__(
        self,
        open_channel: Callable[[], Awaitable[AbstractChannel]],
        *,
        timeout_s: float,
        broker: str,
    ) -> None:
        self._open_channel = open_channel
        self._timeout_s = timeout_s
        self._broker = broker
        self._channel: AbstractChannel | None = None
        self._window: ConfirmWindow | None = None
        self._lock = asyncio.Lock()
        # Channels retired after a nack, with the timers that close them.
        self._retired: dict[AbstractChannel, asyncio.TimerHandle] = {}

    async def _publisher(self) -> AbstractChannel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        # One publish channel per connection: concurrent first publishes must share it.
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._open_channel()
            return self._channel

    async def _usable_window(self, deadline: float) -> ConfirmWindow:
        """The window on the publish channel's current aiormq channel; waits for it up to ``deadline``."""
        window = self._window
        if window is not None and window.usable:
            return window
        async with asyncio.timeout_at(deadline):
            channel = await self._publisher()
            underlay = await channel.get_underlay_channel()
        window = self._window
        if window is None or window.channel is not underlay:
            if not isinstance(underlay, aiormq.Channel):
                raise TypeError(f"expected an aiormq channel, got {type(underlay).__name__}")
            window = self._window = ConfirmWindow(underlay)
        return window

    def _retire(self, window: ConfirmWindow) -> None:
        # A quorum queue that nacked during a leader election keeps nacking on that
        # channel after the election (seen on 3.10): the next publish opens a fresh one.
        window.retired = True
        if self._window is not window:
            return
        self._window = None
        # Publishes waiting for their confirm on the old channel get publish_timeout_s first.
        channel, self._channel = self._channel, None
        if channel is not None and channel not in self._retired:
            self._retired[channel] = asyncio.get_running_loop().call_later(
                self._timeout_s, lambda: asyncio.ensure_future(self._close_retired(channel))
            )

    async def _close_retired(self, channel: AbstractChannel) -> None:
        self._retired.pop(channel).cancel()
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def close(self, *, channel: bool) -> None:
        """Close retired channels, and the publish channel too if ``channel``.

        Pass ``channel=False`` when the connection is about to close anyway.
        """
        for retired in list(self._retired):
            await self._close_retired(retired)
        current, self._channel = self._channel, None
        self._window = None
        if channel and current is not None and not current.is_closed:
            await current.close()

    # -- publishing -------------------------------------------------------------

    async def publish(self, exchange: str, routing_key: str, message: Publishable) -> None:
        """Publish ``mandatory`` and wait for the confirm; raise a typed error otherwise.

        Persistence is the message's own ``delivery_mode``.
        """
        properties, message_id = _wire(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while True:
            try:
                window = await self._usable_window(deadline)
                batch, tag = window.publish(
                    exchange, routing_key, message.body, properties, message_id, deadline
                )
                await batch.wait()
            except BaseException as exc:
                try:
                    self._check(exc, f"publish to exchange {exchange!r}", message.body, message_id)
                except _Lost:
                    if loop.time() >= deadline:
                        break
                    await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - loop.time())))
                    continue
                except TimeoutError:
                    break
            else:
                failure = batch.outcome(tag)
                if failure is None:
                    return
                raise self._failed(failure, window, exchange, routing_key, message_id)
        raise self._unconfirmed(message_id)

    async def publish_all(
        self, publishes: Sequence[Publish], in_flight: int
    ) -> list[BaseException | None]:
        """Publish each, pipelined: at most ``in_flight`` unconfirmed at once; never raises for one.

        Returns, per publish, None once confirmed or the typed error that
        :meth:`publish` would have raised for it. Publishes interrupted by a
        lost connection are published again once it is back, until
        ``publish_timeout_s`` after the call.
        """
        wire = [_wire(message) for _, _, message in publishes]
        results: list[BaseException | None] = [None] * len(publishes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        todo = list(range(len(publishes)))
        while todo:
            try:
                window = await self._usable_window(deadline)
            except BaseException as exc:
                try:
                    self._check(exc, "publish")
                except _Lost:
                    pass
                except TimeoutError:
                    break
                except Exception as error:
                    for index in todo:
                        results[index] = error
                    return results
            else:
                run = _Round(self, window, publishes, wire, results, deadline)
                todo = await run.publish(todo, in_flight)
            if todo:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - loop.time())))
        for index in todo:
            results[index] = self._unconfirmed(wire[index][1])
        return results

    # -- errors -----------------------------------------------------------------

    def _check(
        self, exc: BaseException, what: str, body: bytes | None = None, message_id: str = ""
    ) -> None:
        """Raise what ``exc`` (met while publishing) means: :class:`_Lost`, ``TimeoutError`` or a typed error.

        ``body`` is the publish's own body, if ``exc`` concerns one publish.
        """
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise exc
            # Not this task's cancellation: the channel was closed under the publish.
            raise _Lost() from exc
        if isinstance(exc, TimeoutError | BrokerUnavailable):
            raise exc
        if isinstance(exc, amqp_errors.ChannelAccessRefused):
            raise AccessRefused.from_reply(what, exc) from None
        if isinstance(exc, amqp_errors.ChannelPreconditionFailed) and (
            too_large := _TOO_LARGE.search(str(exc))
        ):
            # RabbitMQ refuses a body over max_message_size (16 MiB by default on 4.x,
            # 128 MiB on 3.x) by closing the channel, under every publish of its batch.
            if body is not None and len(body) > int(too_large.group(1)):
                raise JobTooLarge(
                    f"{self._broker} refused job {message_id}: its {len(body)} bytes are over "
                    "the broker's max_message_size (16 MiB by default on RabbitMQ 4.x); "
                    "lower max_message_bytes or raise max_message_size"
                ) from None
            raise _Lost() from exc  # another publish's body: this one goes again
        if isinstance(exc, Exception) and connection_lost(exc):
            # The channel or connection went away: wait for the robust connection to come
            # back and publish again. A duplicate is possible; a silent loss is not.
            logger.debug("publish interrupted (%s); retrying", type(exc).__name__)
            raise _Lost() from exc
        raise exc

    def _failed(
        self,
        failure: Failure,
        window: ConfirmWindow,
        exchange: str,
        routing_key: str,
        message_id: str,
    ) -> Exception:
        if isinstance(failure, spec.Basic.Return):
            return PublishReturned(
                f"job {message_id} was returned as unroutable: exchange "
                f"{exchange!r} has no binding for routing key {routing_key!r}",
                (message_id,),
            )
        self._retire(window)
        return PublishNacked(
            f"the broker refused job {message_id} (basic.nack) on exchange "
            f"{exchange!r}; a queue may be full with x-overflow=reject-publish",
            (message_id,),
        )

    def _unconfirmed(self, message_id: str) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"job {message_id} was not confirmed by {self._broker} "
            f"within {self._timeout_s:g}s (publish_timeout_s)"
        )


@dataclass
class _Round:
    """One pass of :meth:`ConfirmedPublisher.publish_all` over one window."""

    owner: ConfirmedPublisher
    window: ConfirmWindow
    publishes: Sequence[Publish]
    wire: list[tuple[bytes, str]]
    """Each publish's encoded properties and message id."""
    results: list[BaseException | None]
    deadline: float
    flight: deque[tuple[Batch, list[tuple[int, int]]]] = field(default_factory=deque)
    """Batches written and not yet confirmed, oldest first, with their (index, tag)s."""
    retry: list[int] = field(default_factory=list)

    async def publish(self, todo: list[int], in_flight: int) -> list[int]:
        """Publish ``todo`` (indices); return those to publish again after a lost channel."""
        # Batches of a quarter of the window: the first ones are confirmed while
        # the last ones are written, as with one publish per task.
        per_batch = max(1, in_flight // 4)
        unconfirmed = 0
        window = self.window
        for position, index in enumerate(todo):
            while unconfirmed >= in_flight:
                unconfirmed -= await self._settle_oldest()
            if self.retry or not window.usable:
                self.retry += todo[position:]
                break
            exchange, routing_key, message = self.publishes[index]
            properties, message_id = self.wire[index]
            try:
                batch, tag = window.publish(
                    exchange, routing_key, message.body, properties, message_id, self.deadline
                )
            except Exception as exc:
                self._fail([index], exc)
                continue
            if not self.flight or self.flight[-1][0] is not batch:
                self.flight.append((batch, []))
            entries = self.flight[-1][1]
            entries.append((index, tag))
            unconfirmed += 1
            if len(entries) >= per_batch:
                window.seal()
        while self.flight:
            await self._settle_oldest()
        return self.retry

    async def _settle_oldest(self) -> int:
        """Wait for the oldest batch and record its publishes' outcomes; return how many."""
        batch, entries = self.flight.popleft()
        try:
            await batch.wait()
        except BaseException as exc:
            self._fail([index for index, _ in entries], exc)
            return len(entries)
        for index, tag in entries:
            failure = batch.outcome(tag)
            if failure is not None:
                exchange, routing_key, _ = self.publishes[index]
                self.results[index] = self.owner._failed(
                    failure, self.window, exchange, routing_key, self.wire[index][1]
                )
        return len(entries)

    def _fail(self, indices: list[int], exc: BaseException) -> None:
        for index in indices:
            message_id = self.wire[index][1]
            try:
                self.owner._check(exc, "publish", self.publishes[index][2].body, message_id)
            except _Lost:
                self.retry.append(index)
            except TimeoutError:
                self.results[index] = self.owner._unconfirmed(message_id)
            except Exception as error:
                self.results[index] = error
