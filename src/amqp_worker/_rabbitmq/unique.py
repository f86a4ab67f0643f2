"""Unique-key locks on RabbitMQ: one lock queue per live key, holding one token.

Taking a key's lock (for a job with ``unique_key``, before the job is published):

1. declare the key's lock queue (:func:`~amqp_worker._rabbitmq.unique_names.lock_queue`):
   classic, durable, ``x-max-length: 1``, ``x-overflow: reject-publish``;
2. publish one persistent token (the key and the job id) with the lock's
   window as per-message TTL, ``mandatory``, and wait for the confirm. An ack:
   the lock is taken. A nack: the queue already holds a token, the key is live:
   :class:`~amqp_worker.errors.DuplicateJob`. A return: the queue was deleted
   between 1 and 2 (a release): declare and publish again.

The broker decides between racing publishers (two processes, one queue with
room for one message), so there is no window between a check and a take.

Releasing (after the job's success or park is settled): ``basic.get`` the
token; the job's own (its id) is acked, then the queue deleted if it is still
empty (``if_empty``: if a new lock was taken right then, the delete is refused
and that lock stays). Someone else's token (this job's window passed and
another job took the key) goes back untouched. A job whose window has passed
does not look at all: its token expired, or expires by its TTL.

Declarations, publishes and gets go over a few kept errand channels, never the
shared topology channel (which re-declares its queues on every reconnect, and
whose loss to a 406 would stop every declaration). A 406 or 404 closes only
the errand's channel, which is opened again for the next errand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiormq.exceptions as amqp_errors
from aiormq import spec
from aiormq.abc import AbstractChannel as UnderlyingChannel

from amqp_worker._core.job import Job
from amqp_worker._core.unique import lock_deadline, lock_window_s
from amqp_worker.errors import (
    AccessRefused,
    BrokerUnavailable,
    DuplicateJob,
    TopologyConflict,
)

from .broker import Broker
from .connect import connection_lost
from .unique_names import (
    lock_queue,
    lock_queue_arguments,
    token_body,
    token_holder,
    token_ttl_ms,
)

__all__ = ["LOCK_CHANNELS", "RELEASE_MARGIN_S", "RabbitLocks"]

logger = logging.getLogger("amqp_worker")

#: Kept errand channels: lock errands go in parallel, one per channel at a time.
LOCK_CHANNELS = 4
#: A release within this long of the lock's deadline leaves the token to its TTL:
#: the releaser's clock may be ahead of the publisher's, and a token that expired
#: may already have been replaced by another job's.
RELEASE_MARGIN_S = 2.0
#: Takes in a row whose publish came back returned (the queue was deleted meanwhile).
MAX_RETURNS = 5
#: A pause between attempts while the connection is away.
RETRY_PAUSE_S = 0.1


#: What one publish of a token found: the lock taken, the key live, or the queue gone.
_Outcome = Literal["taken", "live", "lost"]


@dataclass(slots=True)
class _Errand:
    """A kept channel for one errand at a time; None until opened, or once the broker closed it."""

    channel: UnderlyingChannel | None = None


class RabbitLocks:
    """The :class:`~amqp_worker._core.unique.UniqueLocks` of an AMQPWorker; see the module docstring."""

    def __init__(self, broker: Broker, default_for_s: float) -> None:
        self._broker = broker
        self._name = broker.topology.name
        self._default_for_s = default_for_s
        self._timeout_s = broker.settings.publish_timeout_s
        self._errands: asyncio.Queue[_Errand] = asyncio.Queue()
        for _ in range(LOCK_CHANNELS):
            self._errands.put_nowait(_Errand())

    @contextlib.asynccontextmanager
    async def _errand(self) -> AsyncIterator[UnderlyingChannel]:
        """One kept confirm channel, for one errand; bounded by ``publish_timeout_s``."""
        errand = await self._errands.get()
        try:
            async with asyncio.timeout(self._timeout_s):
                if errand.channel is None or errand.channel.is_closed:
                    errand.channel = await self._broker.plain_channel(publisher_confirms=True)
                yield errand.channel
        except (amqp_errors.PublishError, amqp_errors.DeliveryError):
            raise  # a return or a nack leaves the channel open and usable
        except BaseException:
            # Its state is unknown (a 406, a timeout mid-errand): the next errand opens a new one.
            channel, errand.channel = errand.channel, None
            if channel is not None:
                await Broker.close_plain_channel(channel, timeout_s=1.0)
            raise
        finally:
            self._errands.put_nowait(errand)

    # -- taking -----------------------------------------------------------------------

    async def take(self, job: Job) -> None:
        """Hold ``job.unique_key`` for ``job``; :class:`DuplicateJob` if it is live.

        Raises a :class:`~amqp_worker.errors.BrokerError` if the broker could
        not be asked within ``publish_timeout_s``; the key is then not held by
        this job (a token that may have landed is taken back, or expires).
        """
        key = job.unique_key
        assert key is not None
        name = lock_queue(self._name, key)
        ttl_ms = token_ttl_ms(lock_window_s(job, self._default_for_s))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        uncertain = False  # a token of this job may have landed unconfirmed
        returns = 0
        while True:
            try:
                outcome = await self._publish_token(name, key, job.id, ttl_ms)
            except amqp_errors.PublishError:
                outcome = "lost"  # returned: the queue was deleted between declare and publish
            except Exception as exc:
                if not (connection_lost(exc) or isinstance(exc, TimeoutError)):
                    raise
                uncertain = True
                if loop.time() >= deadline:
                    await self.release(job)
                    raise BrokerUnavailable(
                        f"could not take the lock of unique key {key!r} on "
                        f"{self._broker.settings.broker} within {self._timeout_s:g}s "
                        "(publish_timeout_s)"
                    ) from None
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if outcome == "taken":
                return
            if outcome == "lost":
                uncertain = True  # a stale releaser may hold this job's token for a moment
                returns += 1
                if returns >= MAX_RETURNS:
                    raise BrokerUnavailable(f"lock queue {name!r} kept vanishing")
                continue
            if uncertain and await self._release_own(name, job.id):
                uncertain = False  # the nack was this job's own earlier token: take it again
                continue
            raise DuplicateJob(key)

    async def _publish_token(self, name: str, key: str, job_id: str, ttl_ms: int) -> _Outcome:
        """Publish the token: ``taken`` once confirmed and still there, ``live`` if nacked (full),
        ``lost`` if the queue was deleted under it."""
        arguments = lock_queue_arguments()
        async with self._errand() as channel:
            try:
                await channel.queue_declare(name, durable=True, arguments=arguments)
            except amqp_errors.ChannelPreconditionFailed as exc:
                raise TopologyConflict.from_reply("queue", name, exc, arguments) from None
            except amqp_errors.ChannelAccessRefused as exc:
                raise AccessRefused.from_reply(f"declare lock queue {name!r}", exc) from None
            properties = spec.Basic.Properties(
                delivery_mode=2,  # persistent: a lock outlives a broker restart
                expiration=str(ttl_ms),
                content_type="application/json",
            )
            try:
                confirm = await channel.basic_publish(
                    token_body(key, job_id),
                    routing_key=name,
                    properties=properties,
                    mandatory=True,
                )
            except amqp_errors.DeliveryError as exc:
                if isinstance(exc.frame, spec.Basic.Nack):
                    return "live"  # x-max-length 1, reject-publish: a token is there
                raise
            except amqp_errors.ChannelAccessRefused as exc:
                raise AccessRefused.from_reply(f"publish to lock queue {name!r}", exc) from None
            if not isinstance(confirm, spec.Basic.Ack):
                raise TypeError(f"expected a publisher confirm, got {type(confirm).__name__}")
            # Fix (seen in tests/amqp/test_unique.py): a release deleted the empty queue while
            # this token was on its way; RabbitMQ acks a message whose queue was deleted under
            # it, and the token is gone. So a confirm counts only if the token is still there.
            try:
                declared = await channel.queue_declare(name, passive=True)
            except amqp_errors.ChannelNotFoundEntity:
                return "lost"  # the 404 closed this channel: the next errand opens another
            return "taken" if declared.message_count else "lost"

    async def take_all(self, jobs: Sequence[Job]) -> None:
        """Hold the keys of all of ``jobs``, or none: on the first refusal, free those taken."""
        counts = Counter(job.unique_key for job in jobs)
        repeated = next((key for key, n in counts.items() if key is not None and n > 1), None)
        if repeated is not None:
            raise DuplicateJob(repeated, f"unique_key {repeated!r} is twice in one batch")
        outcomes = await asyncio.gather(*(self.take(job) for job in jobs), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if not failed:
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome is None:
                await self.release(job)
        duplicate = next((f for f in failed if isinstance(f, DuplicateJob)), None)
        raise duplicate or failed[0]

    # -- releasing ----------------------------------------------------------------------

    async def release(self, job: Job) -> None:
        """Free ``job.unique_key`` if ``job`` holds it; a broker error is logged, not raised.

        An unreleased lock frees itself when its window passes.
        """
        key = job.unique_key
        if key is None:
            return
        try:
            deadline = lock_deadline(job, self._default_for_s)
        except ValueError:
            return  # never taken: its window was over the limit
        if datetime.now(UTC) >= deadline - timedelta(seconds=RELEASE_MARGIN_S):
            return  # its token expired (or is about to): leave the key to whoever holds it now
        try:
            await self._release_own(lock_queue(self._name, key), job.id)
        except Exception as exc:
            logger.warning(
                "could not release unique key %r of job %s (%s); it frees itself by %s",
                key,
                job.id,
                type(exc).__name__,
                deadline.isoformat(),
            )

    async def _release_own(self, name: str, job_id: str) -> bool:
        """Take ``job_id``'s token out of the lock queue ``name``; True if it was there."""
        async with self._errand() as channel:
            try:
                message = await channel.basic_get(name, no_ack=False)
            except amqp_errors.ChannelNotFoundEntity:
                return False  # no queue: deleted by a release, or swept by x-expires
            tag = message.delivery_tag
            if tag is None:
                return False  # empty: the token expired
            if token_holder(message.body) != job_id:
                # Another job's lock (this one's expired and was taken again): put it back.
                await channel.basic_reject(tag, requeue=True)
                return False
            await channel.basic_ack(tag)
            with contextlib.suppress(amqp_errors.ChannelPreconditionFailed):
                # Refused if a new token came in meanwhile: that lock stays, and so does
                # its queue (the refusal closes this channel; the next errand opens one).
                await channel.queue_delete(name, if_empty=True)
            return True

    async def close(self) -> None:
        """Close the kept channels (the connection is closing)."""
        for _ in range(LOCK_CHANNELS):
            errand = await self._errands.get()
            channel, errand.channel = errand.channel, None
            if channel is not None:
                await Broker.close_plain_channel(channel, timeout_s=1.0)
            self._errands.put_nowait(errand)
