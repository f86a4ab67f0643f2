"""Once per tick across replicas, on RabbitMQ alone: the schedule token and its one holder.

Every replica consumes the queue ``<name>.schedules``, declared with
``x-single-active-consumer``: RabbitMQ delivers its messages to one consumer
at a time, and hands that role to the next one when the holder's channel
closes. The queue holds the *token*: one JSON message with, per schedule,
its newest definition and the last tick fired. The replica that receives it
leads. It keeps it unacked while it leads, fires the ticks that fall due
(:mod:`amqp_worker._core.ticker`), and after each one publishes a new token
(confirmed) before it acks the old one, so the queue never lacks a token.
When a leader dies, RabbitMQ puts its unacked token back and delivers it to
the next replica, which takes over from the ticks recorded in it.

Every replica publishes a *proposal* when it starts: a token with its own
definitions and no ticks. Whoever leads merges every message it receives
(newest definition per schedule, latest tick per schedule; a definition that
differs is logged with both), writes one token holding the merge, and acks
the rest. A proposal on an empty queue is the first token.

After each write, the leader also publishes a status message to
``<name>.schedules.status`` (a queue that keeps only its newest message),
which ``amqp-worker schedules`` reads. ``docs/periodic.md`` has the
failure analysis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel

from amqp_worker._core.job import Job
from amqp_worker._core.schedule import Schedule
from amqp_worker._core.ticker import Clock, Ticker, TickEvent, utc_now
from amqp_worker.errors import InvalidSchedule

from .broker import Broker
from .consumer import Delivery, QueueConsumer
from .schedule_status import STATUS_TYPE, ScheduleStatus
from .schedule_token import (
    TOKEN_TYPE,
    ScheduleState,
    merge_states,
    parse_token,
    schedule_from,
    token_body,
)

__all__ = ["ScheduleLeader"]

logger = logging.getLogger("amqp_worker")

#: Pause before firing again after an enqueue or a token write failed.
RETRY_FIRE_S = 1.0


class ScheduleLeader:
    """One replica's part in the schedule token protocol (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        schedules: Callable[[], Mapping[str, Schedule]],
        *,
        enqueue: Callable[[Job], Any],
        on_tick: Callable[[TickEvent], None] | None = None,
        clock: Clock = utc_now,
        leader_name: str | None = None,
    ) -> None:
        self._broker = broker
        self._schedules = schedules
        self._clock = clock
        self._declared_at = clock()
        self._leader_name = leader_name or f"{socket.gethostname()}:{os.getpid()}"
        self._ticker = Ticker(
            self._firing, enqueue=enqueue, record=self._record, on_tick=on_tick, clock=clock
        )
        self._states: dict[str, ScheduleState] = {}
        self._channel: AbstractChannel | None = None
        self._consumer: QueueConsumer | None = None
        # The token this replica holds (unacked), the ones it merged and will ack,
        # and the id of the token it published last.
        self._held: Delivery | None = None
        self._extra: list[Delivery] = []
        self._expect: str | None = None
        self._lead_channel: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def leading(self) -> bool:
        """True while this replica holds (or is re-writing) the token on an open channel."""
        channel = self._lead_channel
        return channel is not None and not getattr(channel, "is_closed", True)

    async def start(self) -> None:
        """Declare the queues, propose this replica's definitions, and wait for the token."""
        topology = self._broker.topology
        self._channel = await self._broker.channel()
        # Room for the token held and one more message to merge while holding it.
        await self._channel.set_qos(prefetch_count=2)
        await self._broker.declarations.declare_queue(
            topology.schedule_queue, topology.schedule_queue_arguments(), channel=self._channel
        )
        await self._broker.declarations.declare_queue(
            topology.schedule_status_queue, topology.schedule_status_queue_arguments()
        )
        for name, schedule in self._schedules().items():
            self._states[name] = ScheduleState(schedule.definition(), self._declared_at)
        await self._publish_token(self._own_states())
        self._consumer = QueueConsumer(self._channel, topology.schedule_queue, self._on_message)
        await self._consumer.start()

    async def stop(self) -> None:
        """Stop firing and consuming; the token goes back to RabbitMQ for the next replica."""
        await self._stop_ticker()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.cancel()
        channel, self._channel = self._channel, None
        self._held, self._extra, self._lead_channel = None, [], None
        if channel is not None and not channel.is_closed:
            # Closing the channel returns the unacked token to the queue at once.
            with contextlib.suppress(Exception):
                await channel.close()

    # -- the token ------------------------------------------------------------------

    def _own_states(self) -> dict[str, ScheduleState]:
        return {name: self._states[name] for name in self._schedules() if name in self._states}

    async def _on_message(self, delivery: Delivery) -> None:
        # Deliveries arrive in tasks of their own: one at a time changes the token.
        async with self._lock:
            try:
                await self._on_token(delivery)
            except Exception as exc:
                # The channel closed under us (the token is back in the queue), or a write
                # failed: the next delivery, here or on another replica, starts over.
                logger.warning("schedule token not handled: %s: %s", type(exc).__name__, exc)

    async def _on_token(self, delivery: Delivery) -> None:
        if delivery.type != TOKEN_TYPE:
            logger.warning("dropping a message that is not a schedule token from the token queue")
            await delivery.ack()
            return
        try:
            theirs = parse_token(delivery.body)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("dropping an unreadable schedule token: %s", exc)
            await delivery.ack()
            return
        if delivery.came_on is not self._lead_channel:
            await self._take_over(delivery)
        changed = self._merge(theirs)
        if self._held is None and (self._expect is None or delivery.message_id == self._expect):
            self._held = delivery
            if changed:
                await self._write()
        else:
            self._extra.append(delivery)
            if changed:
                await self._write()
            else:
                await self._ack(self._extra)
                self._extra = []

    async def _take_over(self, delivery: Delivery) -> None:
        """This replica became the active consumer (on this channel): lead from now on."""
        await self._stop_ticker()
        self._held, self._extra, self._expect = None, [], None
        self._lead_channel = delivery.came_on
        led_since = self._clock()
        logger.info("this replica leads the schedules now (%s)", self._leader_name)
        self._task = asyncio.ensure_future(self._lead(led_since))

    async def _lead(self, led_since: datetime) -> None:
        while True:
            last_fired = {
                n: s.last_tick for n, s in self._states.items() if s.last_tick is not None
            }
            await self._publish_status(last_fired)
            try:
                await self._ticker.run(last_fired, led_since)
            except _NotLeading:
                return  # the channel closed: RabbitMQ gave the token to the next replica
            except Exception as exc:
                if not self.leading:
                    return
                # An enqueue or a token write failed while this replica still holds the
                # token (the broker refused a publish, say): try again from the last
                # recorded tick rather than hold the token and fire nothing.
                logger.warning(
                    "schedules could not fire (%s: %s); trying again in %gs",
                    type(exc).__name__,
                    exc,
                    RETRY_FIRE_S,
                )
                await asyncio.sleep(RETRY_FIRE_S)

    def _firing(self) -> Mapping[str, Schedule]:
        """The schedules to fire: this replica's own, each with the newest definition known."""
        if not self.leading:
            raise _NotLeading
        firing: dict[str, Schedule] = {}
        for name, own in self._schedules().items():
            state = self._states.get(name)
            if state is None or state.definition == own.definition():
                firing[name] = own
                continue
            try:
                firing[name] = schedule_from(name, state)
            except InvalidSchedule as exc:
                logger.warning("%s; firing this replica's definition instead", exc)
                firing[name] = own
        return firing

    def _merge(self, theirs: Mapping[str, ScheduleState]) -> bool:
        """Merge ``theirs`` into this replica's view; True if that view changed."""
        merged, conflicts = merge_states(self._states, theirs)
        for name, older, newer in conflicts:
            logger.warning(
                "schedule %s is defined differently by two replicas; the newest wins: "
                "%s (declared %s) over %s (declared %s)",
                name,
                json.dumps(newer.definition, sort_keys=True),
                newer.declared_at.isoformat(),
                json.dumps(older.definition, sort_keys=True),
                older.declared_at.isoformat(),
            )
        changed = merged != self._states
        self._states = merged
        return changed

    async def _record(self, last_fired: Mapping[str, datetime]) -> None:
        async with self._lock:
            for name, tick in last_fired.items():
                state = self._states.get(name)
                if state is not None and state.last_tick != tick:
                    self._states[name] = ScheduleState(state.definition, state.declared_at, tick)
            await self._write()
        await self._publish_status(last_fired)

    async def _write(self) -> None:
        """Publish a token with this replica's view (confirmed), then ack what it replaces.

        Call with ``_lock`` held.
        """
        if not self.leading:
            raise _NotLeading
        self._expect = await self._publish_token(self._states)
        replaced = [d for d in (self._held, *self._extra) if d is not None]
        self._held, self._extra = None, []
        await self._ack(replaced)

    async def _publish_token(self, states: Mapping[str, ScheduleState]) -> str:
        token_id = str(uuid.uuid4())
        message = Message(
            token_body(states),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=token_id,
            type=TOKEN_TYPE,
        )
        await self._broker.publish("", self._broker.topology.schedule_queue, message)
        return token_id

    async def _ack(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if not delivery.processed:
                await delivery.ack()

    async def _publish_status(self, last_fired: Mapping[str, datetime]) -> None:
        status = ScheduleStatus.of(
            self._leader_name, self._broker.node, self._clock(), self._firing_or_own(), last_fired
        )
        message = Message(
            status.encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            type=STATUS_TYPE,
        )
        with contextlib.suppress(Exception):
            # Status is for people: a failure here must never stop the schedules.
            await self._broker.publish("", self._broker.topology.schedule_status_queue, message)

    def _firing_or_own(self) -> Mapping[str, Schedule]:
        try:
            return self._firing()
        except _NotLeading:
            return self._schedules()

    async def _stop_ticker(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _NotLeading(Exception):
    """This replica lost the token (its channel closed): another one fires now."""
