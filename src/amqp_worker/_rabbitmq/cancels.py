"""Cancels on RabbitMQ: one stream of cancelled job ids, read by every consuming worker.

The mechanism (docs/controls.md#cancel):

- ``worker.cancel(ids)`` appends one persistent, confirmed record per id to
  the stream ``<name>.cancels`` (``x-max-age``: ``cancel_ttl_s``;
  ``x-max-length-bytes``: ``cancels_max_bytes``), through the fanout
  exchange of the same name. Two broker objects however many cancels; a
  publisher-only process never reads the stream.
- A worker that consumes runs one *listener*, a stream consumer from its
  start less ``cancel_ttl_s``, that adds each id to the worker's
  :class:`~amqp_worker._core.cancels.CancelBook` (which also interrupts a
  running attempt of it). Per job, a worker pays one dict lookup.
- Before its consumers start, once its listener is attached, the worker
  appends a private *sync marker* and waits until the listener has read it
  (writing it again every :data:`SYNC_WARN_S`): the stream is ordered, so every
  cancel confirmed before the worker started is in the book before the
  worker takes its first job. A worker started after a cancel never runs
  that job.

The stream is declared on a channel kept for it, never the shared topology
channel, and read with the bounded-consume reader of stream_reader.py, like the
results stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import aiormq.exceptions as amqp_errors
from aio_pika import DeliveryMode, Message
from aiormq.abc import AbstractChannel as UnderlyingChannel

from amqp_worker._core.cancels import CancelBook
from amqp_worker.errors import AccessRefused, BrokerUnavailable, TopologyConflict

from .broker import Broker
from .publishing import IN_FLIGHT, raise_first
from .stream_reader import CLOCK_SKEW, STOP_WAIT_S, StreamReader
from .streams import settle_new_stream, stream_exists

__all__ = ["RabbitCancelling", "RabbitCancels", "cancel_record"]

logger = logging.getLogger("amqp_worker")

#: The shortest wait for the listener to read up to the sync marker (publish_timeout_s if longer).
SYNC_TIMEOUT_S = 60.0
#: How often a starting worker that waits for the sync marker says so.
SYNC_WARN_S = 10.0
#: How long to wait before declaring a stream RabbitMQ said was not reachable again.
RETRY_DECLARE_S = 1.0
#: How long a starting worker waits for an unreachable cancellations stream before it
#: takes jobs without it (see RabbitCancels.listen).
DECLARE_GRACE_S = 5.0


def cancel_record(job_id: str, at: datetime) -> bytes:
    """The body of one cancel: the job id and when it was cancelled (ms since the epoch)."""
    return json.dumps({"job_id": job_id, "cancelled_at_ms": round(at.timestamp() * 1000)}).encode()


class RabbitCancels:
    """Appends cancels to the cancellations stream, and reads them into a worker's book."""

    def __init__(self, broker: Broker, book: CancelBook) -> None:
        self._broker = broker
        self._book = book
        self._stream = broker.topology.cancels_stream
        self._declared = False
        self._lock = asyncio.Lock()
        self._errand: UnderlyingChannel | None = None
        self._listener: StreamReader | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._late: asyncio.Future[None] | None = None

    async def ensure(self) -> None:
        """Declare the cancellations stream, once per process."""
        if self._declared:
            return
        async with self._lock:
            if self._declared:
                return
            settings = self._broker.settings
            arguments = self._broker.topology.results_stream_arguments(
                settings.cancel_ttl_s, settings.cancels_max_bytes
            )
            created = not await stream_exists(self._broker, self._stream)
            # A kept channel of its own, never the topology channel: see RabbitResults.ensure.
            if self._errand is None or self._errand.is_closed:
                self._errand = await self._broker.plain_channel()
            errand, name = self._errand, self._stream
            try:
                # Cancels go through a fanout exchange of the same name, not the default
                # exchange: the permissions of docs/security.md cover `<name>.*` only.
                await errand.exchange_declare(name, exchange_type="fanout", durable=True)
                await errand.queue_declare(name, durable=True, arguments=arguments)
                await errand.queue_bind(name, name)
            except amqp_errors.ChannelPreconditionFailed as exc:
                self._errand = None
                raise TopologyConflict.from_reply("queue", name, exc, arguments) from None
            except amqp_errors.ChannelAccessRefused as exc:
                self._errand = None
                raise AccessRefused.from_reply(
                    f"declare the cancellations stream {name}", exc
                ) from None
            if created:
                await settle_new_stream()
            self._declared = True

    def _message(self, body: bytes, message_id: str, at: datetime) -> Message:
        return Message(
            body,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            timestamp=at,
        )

    async def publish(self, job_ids: Iterable[str]) -> None:
        """Append one record per id; return once all are confirmed (else PublishError naming them)."""
        await self.ensure()
        at = datetime.now(UTC)
        ids = list(job_ids)
        publishes = [
            (self._stream, "", self._message(cancel_record(job_id, at), job_id, at))
            for job_id in ids
        ]
        raise_first(await self._broker.publish_all(publishes, IN_FLIGHT), ids)

    async def listen(self) -> None:
        """Start the listener (once) and return when it has read the stream up to now.

        Raises :class:`~amqp_worker.errors.BrokerUnavailable` if the stream was
        not read up to a fresh marker within ``max(SYNC_TIMEOUT_S,
        publish_timeout_s)``: a worker that cannot know the cancels must not
        take jobs. One exception, logged at ERROR: a stream RabbitMQ reports
        unreachable for :data:`DECLARE_GRACE_S` (3.10 leaves one so after a
        crash of its node, for good). The worker then takes jobs without
        knowing the cancels, rather than never again, and reads the stream
        once it is back.
        """
        try:
            async with asyncio.timeout(DECLARE_GRACE_S):
                await self._ensure_until_declared()
        except TimeoutError:
            logger.error(
                "the cancellations stream %s is not reachable; taking jobs without knowing "
                "the cancels (a job cancelled meanwhile may run) until it is back",
                self._stream,
            )
            self._late = asyncio.ensure_future(self._listen_when_back())
            return
        settings = self._broker.settings
        timeout_s = max(SYNC_TIMEOUT_S, settings.publish_timeout_s)
        token = uuid.uuid4().hex
        caught_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncs[token] = caught_up
        try:
            # One bound for all of it: RabbitMQ 3.10 may leave a stream consume unanswered.
            async with asyncio.timeout(timeout_s):
                listener = self._start_listener()
                # Written only once the listener is attached: a marker written while it
                # attaches may be missed (stream_reader.py), and the start would wait in vain.
                await listener.attached.wait()
                await self._until_read(caught_up, token)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the cancellations stream {self._stream} was not read up to now within "
                f"{timeout_s:g}s; not taking jobs (a cancelled one could run)"
            ) from None
        finally:
            del self._syncs[token]

    async def _until_read(self, caught_up: asyncio.Future[None], token: str) -> None:
        """Write the sync marker and wait until it is read.

        Every :data:`SYNC_WARN_S` it is not, a WARNING, and the marker once
        more (should RabbitMQ have lost the reader's place, the next one is read).
        """
        started = asyncio.get_running_loop().time()
        body = json.dumps({"sync": token}).encode()
        while not caught_up.done():
            marker = self._message(body, f"sync:{token}", datetime.now(UTC))
            await self._broker.publish(self._stream, "", marker)
            await asyncio.wait({caught_up}, timeout=SYNC_WARN_S)
            if not caught_up.done():
                logger.warning(
                    "the cancellations stream %s is not read up to now after %.0fs; "
                    "no job is taken before it is",
                    self._stream,
                    asyncio.get_running_loop().time() - started,
                )

    def _start_listener(self) -> StreamReader:
        if self._listener is None:
            ttl = timedelta(seconds=self._broker.settings.cancel_ttl_s)
            start = datetime.now(UTC) - ttl - CLOCK_SKEW
            self._listener = StreamReader(self._broker, self._stream, start, self._arrived)
            self._listener.start()
        return self._listener

    async def _listen_when_back(self) -> None:
        await self._ensure_until_declared()
        logger.warning("the cancellations stream %s is back; reading the cancels", self._stream)
        self._start_listener()

    async def _ensure_until_declared(self) -> None:
        """:meth:`ensure`, asked again while RabbitMQ says the stream is not reachable.

        Fix: just after a node restart, RabbitMQ 3.10 answers a declare of an
        existing stream with NOT_FOUND ("home node ... is down or inaccessible")
        until the stream's member is back; a worker starting then failed at once.
        The caller bounds the wait (or runs it in the background).
        """
        while True:
            try:
                await self.ensure()
                return
            except amqp_errors.ChannelNotFoundEntity as exc:
                logger.debug("cancellations stream %s not reachable yet (%s)", self._stream, exc)
                self._errand = None  # the broker closed it
                await asyncio.sleep(RETRY_DECLARE_S)

    def _arrived(self, message_id: str, body: bytes) -> None:
        """One record from the listener: a cancel into the book, or a sync marker reached."""
        try:
            record = json.loads(body)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {}
        sync = record.get("sync")
        if isinstance(sync, str):
            waiter = self._syncs.get(sync)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        job_id = record.get("job_id") or message_id  # another client may send the id alone
        at_ms = record.get("cancelled_at_ms")
        at_s = None
        if isinstance(at_ms, int | float) and not isinstance(at_ms, bool):
            at_s = at_ms / 1000
        if isinstance(job_id, str) and job_id:
            self._book.add(job_id, at_s)

    async def close(self) -> None:
        """Stop the listener and let the errand channel go (the connection is closing)."""
        late, self._late = self._late, None
        if late is not None:
            late.cancel()
            await asyncio.wait({late}, timeout=STOP_WAIT_S)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        errand, self._errand = self._errand, None
        if errand is not None:
            await Broker.close_plain_channel(errand, STOP_WAIT_S)
        self._declared = False


class RabbitCancelling:
    """A base of ``AMQPWorker``: its cancels go to the cancellations stream."""

    _cancel_stream: RabbitCancels

    async def _send_cancels(self, job_ids: list[str]) -> None:
        await self._cancel_stream.publish(job_ids)
