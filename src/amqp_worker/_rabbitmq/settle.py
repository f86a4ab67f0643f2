"""Settling deliveries: how each message a worker received ends.

A delivery is acked after its job succeeded, or after the job was safely
re-published (a retry, a job sent round the delay topology again) or parked
in its failed-jobs queue, each confirmed by the broker first. Anything that
cannot be finished is handed back (nack with requeue) and redelivered.

An ack or nack on a channel that closed since the delivery (a reconnect, a
shutdown) fails: RabbitMQ has already put the message back, and it must never
be acked on a new channel, where its delivery tag names another message. Such
failures are logged at WARNING and otherwise ignored; anything else surfaces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import aio_pika.exceptions as aio_pika_errors
import aiormq.exceptions as amqp_errors
from aio_pika import DeliveryMode, Message

from amqp_worker._core.failures import AttemptRecord, FailureReason
from amqp_worker._core.job import Job
from amqp_worker.errors import BrokerError

from .acks import ACK_WRITE_TIMEOUT_S, AckBatcher
from .broker import Broker
from .connect import connection_lost
from .consumer import Delivery
from .messages import (
    DELIVERIES_HEADER,
    DUE_HEADER,
    ENCODE_ERRORS,
    carried_headers,
    parked_message,
    plain_copy,
)
from .publishing import JobPublisher

__all__ = ["Settler", "stale"]

#: Wait before handing back a message that could not be parked or retried, so it cannot spin.
HAND_BACK_PAUSE_S = 1.0

logger = logging.getLogger("amqp_worker")


class Settler:
    """Settles messages, and keeps track of settlements running in the background.

    :meth:`wait` lets ``stop()`` finish every ack, hand-back and park that is
    still in flight before the channels close. Acks are batched
    (:mod:`amqp_worker._rabbitmq.acks`): every delivery must be recorded with
    :meth:`delivered` as it arrives.
    """

    def __init__(self, broker: Broker, publisher: JobPublisher) -> None:
        self._broker = broker
        self._publisher = publisher
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks = AckBatcher()
        self._moving = 0
        self._no_moves = asyncio.Event()
        self._no_moves.set()

    def delivered(self, message: Delivery) -> None:
        """Record a delivery as it arrives, before anything else is done with it."""
        self._acks.delivered(message)

    def ack_queued(self, message: Delivery) -> bool:
        """True if ``message``'s ack is queued (it counts as settled) and not yet written."""
        return self._acks.queued(message)

    async def moves_settled(self) -> None:
        """Return once no quarantine move of this worker is between its publish and its ack.

        A quarantined job that kills its process must not take the ack of the
        message it was copied from down with it (see :meth:`quarantine`).
        """
        await self._no_moves.wait()

    def track(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; :meth:`wait` waits for it."""
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hand_back(self, message: Delivery) -> None:
        """Return an unfinished message to RabbitMQ (nack, requeue); it is redelivered."""
        self.track(self._nack(message))

    async def _nack(self, message: Delivery) -> None:
        try:
            await self.settle(message.nack(requeue=True), "hand back a message")
        finally:
            # Only once the nack is written may a multiple ack cover its tag.
            self._acks.settled(message)

    async def ack(self, message: Delivery, what: str) -> None:
        """Ack ``message``: queued for this loop pass's batch (see :mod:`amqp_worker._rabbitmq.acks`).

        A message that was never recorded is acked on its own; ``what`` names
        it in the warning if its channel is gone.
        """
        if not self._acks.ack(message):
            await self.settle(message.ack(), f"ack {what}")

    async def settle(self, action: Awaitable[Any], what: str) -> None:
        """Await ``action`` (an ack, a nack, a cancel); a lost channel is only logged."""
        try:
            await action
        except (amqp_errors.AMQPError, aio_pika_errors.MessageProcessError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and not connection_lost(exc):
                raise
            # The channel is gone (reconnect or shutdown): RabbitMQ already requeued the
            # message, and acking it on a new channel would hit the wrong delivery tag.
            logger.warning("could not %s: %s; RabbitMQ redelivers it", what, type(exc).__name__)

    async def republish(
        self,
        message: Delivery,
        job: Job,
        headers: dict[str, Any],
        due_ms: int | None,
        *,
        pause: bool = True,
    ) -> bool:
        """Publish ``job`` anew (confirmed), then ack ``message``; True if it was re-published.

        If the publish fails, ``message`` is handed back instead (after a
        pause, with ``pause``, so a broker that refuses cannot make it spin).
        """
        try:
            await self._publisher.publish(job, headers, due_ms)
        except BrokerError as exc:
            logger.error("could not re-publish job %s (%s); handing it back", job.id, exc)
            await self._pause_and_hand_back(message, pause)
            return False
        # Only now, with the new copy confirmed by the broker, is the original let go.
        await self.ack(message, f"re-published job {job.id}")
        return True

    async def park(
        self,
        queue: str,
        message: Delivery,
        reason: FailureReason,
        error: BaseException,
        job: Job | None = None,
        history: list[AttemptRecord] | None = None,
        extra_headers: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move ``message`` to ``queue``'s failed-jobs queue with the reason, then ack it.

        True once it is parked (confirmed) and acked; if parking fails, the
        message is handed back after a pause and the result is False.
        """
        failed_queue = self._broker.topology.failed_queue(queue)
        what = f"job {job.id}" if job else f"message {message.message_id or '(no id)'}"
        parked = parked_message(message, queue, reason, error, job=job, history=history or ())
        parked.headers.update(extra_headers or {})
        ensure = self._broker.declarations.ensure_failed_queue(queue)
        if not await self._move(message, failed_queue, parked, what, ensure):
            return False
        loud = reason in (FailureReason.UNKNOWN_HANDLER, FailureReason.CRASHED)
        log = logger.error if loud else logger.warning
        log(
            "%s parked in %s: %s: %s",
            what,
            failed_queue,
            reason.value,
            error,
            extra={"job_id": job.id if job else None, "queue": queue, "reason": reason.value},
        )
        return True

    async def quarantine(self, queue: str, message: Delivery, job: Job, deliveries: int) -> bool:
        """Move a job that came back unfinished to ``queue``'s quarantine queue, then ack it.

        The ack is not batched: it is written to the socket before this returns,
        and a quarantined job waits for :meth:`moves_settled` before it runs. If
        the copy's handler kills the process while the original's ack was still
        queued, the original would come back beside the copy: two copies of one
        poison job, each parked in the end.
        """
        self._moving += 1
        self._no_moves.clear()
        try:
            return await self._quarantine(queue, message, job, deliveries)
        finally:
            self._moving -= 1
            if not self._moving:
                self._no_moves.set()

    async def hold(self, message: Delivery, job: Job, target: str, ensure: Awaitable[Any]) -> bool:
        """Move ``job`` to the limit queue ``target`` (declared by ``ensure``), then ack it.

        It keeps its due time (``aw-due-ms``): the wait for its limit counts
        towards its handler's ``max_age_s``. False (handed back) if the move failed.
        """
        due = message.headers.get(DUE_HEADER) if message.headers else None
        moved = _copy(message, job, {} if due is None else {DUE_HEADER: due})
        return await self._move(message, target, moved, f"job {job.id}", ensure)

    async def _quarantine(self, queue: str, message: Delivery, job: Job, deliveries: int) -> bool:
        target = self._broker.topology.quarantine_queue(queue)
        moved = _copy(message, job, {DELIVERIES_HEADER: deliveries})
        ensure = self._broker.declarations.ensure_quarantine_queue(queue)
        if not await self._move(message, target, moved, f"job {job.id}", ensure, written=True):
            return False
        logger.warning(
            "job %s came back unfinished (its worker stopped or died, %d time(s)); "
            "it runs alone from %s",
            job.id,
            deliveries,
            target,
            extra={"job_id": job.id, "queue": queue, "deliveries": deliveries},
        )
        return True

    async def _move(
        self,
        message: Delivery,
        target: str,
        outgoing: Message,
        what: str,
        ensure: Awaitable[Any],
        *,
        written: bool = False,
    ) -> bool:
        """Declare (``ensure``) and publish ``outgoing`` to the queue ``target``, then ack ``message``.

        With ``written``, the ack is written to the socket before this returns,
        not batched. On failure, ``message`` is handed back after a pause and
        the result is False.
        """
        try:
            await ensure
            try:
                await self._broker.publish("", target, outgoing)
            except ENCODE_ERRORS as exc:
                # Properties copied from another client's message that this client cannot
                # write (a 10 kB message_id, say): keep the body and what can be encoded.
                logger.warning("re-publishing %s without what cannot be encoded (%s)", what, exc)
                await self._broker.publish("", target, plain_copy(outgoing))
        except BrokerError as exc:
            logger.error("could not move %s to %s (%s); handing it back", what, target, exc)
            await self._pause_and_hand_back(message, True)
            return False
        if written:
            try:
                async with asyncio.timeout(ACK_WRITE_TIMEOUT_S):
                    await self.settle(message.ack(), f"ack moved {what}")
            except TimeoutError:
                # The connection's writer is stuck: the connection is as good as lost,
                # and RabbitMQ redelivers the original when it goes.
                logger.warning("could not ack moved %s in time; RabbitMQ redelivers it", what)
            finally:
                # Only once this single ack is written may a multiple ack cover its tag.
                self._acks.settled(message)
        else:
            await self.ack(message, f"moved {what}")
        return True

    async def _pause_and_hand_back(self, message: Delivery, pause: bool) -> None:
        if pause:
            await asyncio.sleep(HAND_BACK_PAUSE_S)
        self.hand_back(message)

    async def wait(self) -> None:
        """Wait until no settlement is in flight (including ones started meanwhile)."""
        while self._tasks or self._acks.pending:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._acks.wait()


def _copy(message: Delivery, job: Job, headers: Mapping[str, Any]) -> Message:
    """A persistent copy of ``message`` (its carried headers, and ``headers``) to move it."""
    return Message(
        message.body,
        headers={**carried_headers(message.headers), **headers},
        content_type=message.content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=job.id,
        type=message.type,
        timestamp=message.timestamp,
    )


def stale(message: Delivery) -> bool:
    """True if the channel that delivered ``message`` is closed (it will be redelivered)."""
    try:
        message.channel  # noqa: B018 - raises once that channel is closed
    except RuntimeError as exc:
        if connection_lost(exc):
            return True
        raise
    return False
