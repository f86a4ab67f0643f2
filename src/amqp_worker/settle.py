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
from collections.abc import Awaitable
from typing import Any

import aio_pika.exceptions as aio_pika_errors
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractIncomingMessage

from .broker import Broker
from .connect import connection_lost
from .errors import BrokerError
from .failures import AttemptRecord, FailureReason
from .job import Job
from .messages import parked_message
from .publishing import JobPublisher

__all__ = ["Settler", "stale"]

#: Wait before handing back a message that could not be parked or retried, so it cannot spin.
HAND_BACK_PAUSE_S = 1.0

logger = logging.getLogger("amqp_worker")


class Settler:
    """Settles messages, and keeps track of settlements running in the background.

    :meth:`wait` lets ``stop()`` finish every ack, hand-back and park that is
    still in flight before the channels close.
    """

    def __init__(self, broker: Broker, publisher: JobPublisher) -> None:
        self._broker = broker
        self._publisher = publisher
        self._tasks: set[asyncio.Task[None]] = set()

    def track(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; :meth:`wait` waits for it."""
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hand_back(self, message: AbstractIncomingMessage) -> None:
        """Return an unfinished message to RabbitMQ (nack, requeue); it is redelivered."""
        self.track(self.settle(message.nack(requeue=True), "hand back a message"))

    async def ack(self, message: AbstractIncomingMessage, what: str) -> None:
        """Ack ``message`` (``what`` names it in the warning if its channel is gone)."""
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
        message: AbstractIncomingMessage,
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
        message: AbstractIncomingMessage,
        reason: FailureReason,
        error: BaseException,
        job: Job | None = None,
        history: list[AttemptRecord] | None = None,
    ) -> bool:
        """Move ``message`` to ``queue``'s failed-jobs queue with the reason, then ack it.

        True once it is parked (confirmed) and acked; if parking fails, the
        message is handed back after a pause and the result is False.
        """
        failed_queue = self._broker.topology.failed_queue(queue)
        what = f"job {job.id}" if job else f"message {message.message_id or '(no id)'}"
        parked = parked_message(message, queue, reason, error, job=job, history=history or ())
        try:
            await self._broker.ensure_failed_queue(queue)
            await self._broker.publish("", failed_queue, parked)
        except BrokerError as exc:
            logger.error(
                "could not park %s in %s (%s); handing it back to RabbitMQ", what, failed_queue, exc
            )
            await self._pause_and_hand_back(message, True)
            return False
        log = logger.error if reason is FailureReason.UNKNOWN_HANDLER else logger.warning
        log(
            "%s parked in %s: %s: %s",
            what,
            failed_queue,
            reason.value,
            error,
            extra={"job_id": job.id if job else None, "queue": queue, "reason": reason.value},
        )
        await self.ack(message, f"parked {what}")
        return True

    async def _pause_and_hand_back(self, message: AbstractIncomingMessage, pause: bool) -> None:
        if pause:
            await asyncio.sleep(HAND_BACK_PAUSE_S)
        self.hand_back(message)

    async def wait(self) -> None:
        """Wait until no settlement is in flight (including ones started meanwhile)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def stale(message: AbstractIncomingMessage) -> bool:
    """True if the channel that delivered ``message`` is closed (it will be redelivered)."""
    try:
        message.channel  # noqa: B018 - raises once that channel is closed
    except RuntimeError as exc:
        if connection_lost(exc):
            return True
        raise
    return False
