"""Once per tick across replicas, on RabbitMQ alone: the schedule token and its one holder.

Every replica consumes the queue ``<name>.schedules``, declared with
``x-single-active-consumer``: RabbitMQ delivers its messages to one consumer
at a time, and hands that role to the next one when the holder's channel
closes. The queue holds the *token*: one JSON message with, per schedule,
its newest definition and the last tick fired. The replica that receives it
leads. It keeps it unacked while it leads, fires the ticks that fall due
(:mod:`amqp_worker.ticker`), and after each one publishes a new token
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel
from pydantic import ValidationError

from .broker import Broker
from .consumer import Delivery, QueueConsumer
from .errors import InvalidSchedule
from .job import Job
from .schedule import Schedule
from .ticker import Clock, Ticker, TickEvent, utc_now

__all__ = ["ScheduleLeader", "ScheduleState", "merge_states", "parse_token", "token_body"]

logger = logging.getLogger("amqp_worker")

TOKEN_TYPE = "aw-schedule-token"
#: Pause before firing again after an enqueue or a token write failed.
RETRY_FIRE_S = 1.0
STATUS_TYPE = "aw-schedule-status"


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the token keeps of one schedule."""

    definition: dict[str, Any]
    declared_at: datetime
    """When the replica that wrote this definition started: the newest one wins."""
    last_tick: datetime | None = None


def token_body(states: Mapping[str, ScheduleState]) -> bytes:
    """The JSON of a token."""
    return json.dumps(
        {
            "schedules": {
                name: {
                    "definition": state.definition,
                    "declared_at": state.declared_at.isoformat(),
                    "last_tick": state.last_tick.isoformat() if state.last_tick else None,
                }
                for name, state in sorted(states.items())
            }
        },
        sort_keys=True,
    ).encode()


def parse_token(body: bytes) -> dict[str, ScheduleState]:
    """The states a token holds; raise ``ValueError`` if it is not a token."""
    data = json.loads(body)
    schedules = data.get("schedules") if isinstance(data, dict) else None
    if not isinstance(schedules, dict):
        raise ValueError("not a schedule token")
    states: dict[str, ScheduleState] = {}
    for name, entry in schedules.items():
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise ValueError("not a schedule token")
        definition = entry.get("definition")
        if not isinstance(definition, dict):
            raise ValueError(f"schedule {name!r} has no definition")
        last = entry.get("last_tick")
        states[name] = ScheduleState(
            definition,
            _aware(datetime.fromisoformat(entry["declared_at"])),
            _aware(datetime.fromisoformat(last)) if last else None,
        )
    return states


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("token times must carry an offset")
    return moment.astimezone(UTC)


def merge_states(
    mine: Mapping[str, ScheduleState], theirs: Mapping[str, ScheduleState]
) -> tuple[dict[str, ScheduleState], list[tuple[str, ScheduleState, ScheduleState]]]:
    """Merge two views: latest tick per schedule, newest definition per schedule.

    Returns the merge and the schedules whose definitions differ, as
    ``(name, older, newer)``. Merging is commutative and idempotent, so any
    number of tokens and proposals, in any order, end in the same state.
    """
    merged = dict(mine)
    conflicts: list[tuple[str, ScheduleState, ScheduleState]] = []
    for name, other in theirs.items():
        current = merged.get(name)
        if current is None:
            merged[name] = other
            continue
        older, newer = sorted((current, other), key=lambda s: (s.declared_at, _key(s)))
        if older.definition != newer.definition:
            conflicts.append((name, older, newer))
        ticks = [t for t in (current.last_tick, other.last_tick) if t is not None]
        merged[name] = ScheduleState(
            newer.definition, newer.declared_at, max(ticks) if ticks else None
        )
    return merged, conflicts


def _key(state: ScheduleState) -> str:
    # A total order for equal declared_at, so both sides of a merge pick the same one.
    return json.dumps(state.definition, sort_keys=True)


def schedule_from(name: str, state: ScheduleState) -> Schedule:
    """The :class:`Schedule` a token's definition describes; raise ``InvalidSchedule``."""
    definition = state.definition
    try:
        job = Job.model_validate(definition["job"])
        return Schedule.build(
            name,
            job,
            cron=definition.get("cron"),
            every=definition.get("every_s"),
            tz=definition.get("tz", "UTC"),
            missed=definition.get("missed", "once"),
        )
    except (KeyError, TypeError, ValidationError) as exc:
        raise InvalidSchedule(
            f"schedule {name!r}: unusable definition in the token: {exc}"
        ) from None


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
        await self._broker.declare_queue(
            topology.schedule_queue, topology.schedule_queue_arguments(), channel=self._channel
        )
        await self._broker.declare_queue(
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
        now = self._clock()
        rows = []
        for name, schedule in sorted(self._firing_or_own().items()):
            last = last_fired.get(name)
            rows.append(
                {
                    "name": name,
                    "schedule": schedule.describe(),
                    "tz": schedule.tz,
                    "missed": schedule.missed,
                    "last_tick": last.isoformat() if last else None,
                    "next_tick": schedule.next_tick(max(now, last or now)).isoformat(),
                }
            )
        body = json.dumps(
            {
                "leader": self._leader_name,
                "node": self._broker.node,
                "at": now.isoformat(),
                "schedules": rows,
            }
        ).encode()
        message = Message(
            body,
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
