"""Job results on RabbitMQ: one stream, written once per result, read by offset.

The mechanism (docs/workflows.md has the measurements):

- Every kept result (and every finished group) is one persistent, confirmed
  message in the stream ``<name>.results``, its ``message_id`` the job id.
  One broker object whatever the number of jobs; ``x-max-age`` (from
  ``result_ttl_s``) and ``x-max-length-bytes`` (``results_max_bytes``) bound
  it, segment by segment.
- A process that waits for results runs one *listener*: a stream consumer
  from the time of its first wait, which hands each record to whoever waits
  for that id and remembers the last :data:`RECENT` records (a result that
  arrived just before its ``result()`` call is found there).
- A wait for a job that may have finished before the listener started also
  *scans* the stream from the job's enqueue time, on a consumer of its own
  that stops when the record is found or the wait ends.

Stream consumers need a prefetch and acks; acks only move the window.
Nothing is held in worker memory that a crash could lose: the records are
on the broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime

import aiormq.exceptions as amqp_errors
from aio_pika import DeliveryMode, Message
from aiormq.abc import AbstractChannel as UnderlyingChannel

from amqp_worker._core.results import JobResult
from amqp_worker.errors import ResultTimeout, TopologyConflict

from .broker import Broker
from .stream_reader import CLOCK_SKEW, STOP_WAIT_S, StreamReader
from .streams import settle_new_stream, stream_exists

__all__ = ["RECENT", "RabbitResults"]

logger = logging.getLogger("amqp_worker")

#: Records the listener remembers, for waits that begin just after their record passed.
RECENT = 10_000
#: The kind header of a result record, and of a finished group's record.
KIND_HEADER = "aw-kind"


def _now() -> datetime:
    return datetime.now(UTC)


class RabbitResults:
    """Stores results in the results stream and finds them for :class:`~amqp_worker.JobHandle` s."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._stream = broker.topology.results_stream
        self._declared = False
        self._lock = asyncio.Lock()
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._horizon: datetime | None = None
        self._listener: StreamReader | None = None
        self._rescan: asyncio.Future[None] | None = None
        # Catch-up reads from earlier offsets, shared by every wait they cover; they
        # end when nobody waits any more.
        self._scans: list[StreamReader] = []
        self._stopping: set[asyncio.Future[None]] = set()
        self._errand: UnderlyingChannel | None = None

    async def ensure(self) -> None:
        """Declare the results stream, once per process."""
        if self._declared:
            return
        async with self._lock:
            if not self._declared:
                settings = self._broker.settings
                arguments = self._broker.topology.results_stream_arguments(
                    settings.result_ttl_s, settings.results_max_bytes
                )
                # Declared on a channel this object keeps, never the shared topology channel
                # (fix: that one re-declares its queues on every reconnect, and a stream
                # RabbitMQ reports down then, as 3.10 may after a crash, failed the reconnect
                # with NOT_FOUND over and over: the worker never came back). Kept, not opened
                # and closed: a channel number reused at once left 3.10 answering nothing.
                created = not await stream_exists(self._broker, self._stream)
                if self._errand is None or self._errand.is_closed:
                    self._errand = await self._broker.plain_channel()
                try:
                    await self._errand.queue_declare(
                        self._stream, durable=True, arguments=arguments
                    )
                except amqp_errors.ChannelPreconditionFailed as exc:
                    self._errand = None
                    raise TopologyConflict.from_reply(
                        "queue", self._stream, exc, arguments
                    ) from None
                if created:
                    await settle_new_stream()
                self._declared = True

    async def store(self, key: str, body: bytes, kind: str) -> None:
        """Append one record under ``key`` (a job id, ``group:<id>``); return once confirmed."""
        await self.ensure()
        message = Message(
            body,
            message_id=key,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            headers={KIND_HEADER: kind},
            timestamp=_now(),
        )
        await self._broker.publish("", self._stream, message)

    async def store_result(self, record: JobResult) -> None:
        """Keep a job's result record."""
        await self.store(record.job_id, record.to_json(), "result")

    async def wait_result(self, job_id: str, timeout_s: float, since: datetime | None) -> JobResult:
        body = await self.wait(job_id, timeout_s, since)
        return JobResult.model_validate_json(body)

    async def wait(self, key: str, timeout_s: float, since: datetime | None) -> bytes:
        """The first record under ``key`` at or after ``since`` (None: the oldest kept).

        Raises :class:`~amqp_worker.errors.ResultTimeout` after ``timeout_s``.
        """
        await self.ensure()
        found = self._recent.get(key)
        if found is not None:
            return found
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            self._listen()
            if since is None or self._horizon is None or since - CLOCK_SKEW < self._horizon:
                offset: datetime | str = "first" if since is None else since - CLOCK_SKEW
                if not self._scanned_from(offset):
                    self._scan_from(offset)
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            raise ResultTimeout(
                f"no result of {key} within {timeout_s}s (not finished, not kept: "
                "register its handler with result=True, or expired after result_ttl_s)"
            ) from None
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[key]
            if not self._waiters and self._scans:
                # Stopped in the background: the answer is not held up by a scan's channel.
                scans, self._scans = self._scans, []
                for scan in scans:
                    stopping = asyncio.ensure_future(scan.stop())
                    self._stopping.add(stopping)
                    stopping.add_done_callback(self._stopping.discard)

    def _listen(self) -> None:
        if self._listener is None:
            start = _now() - CLOCK_SKEW
            self._horizon = start
            self._listener = StreamReader(self._broker, self._stream, start, self._arrived)
            self._listener.start()
            self._rescan = asyncio.ensure_future(self._rescan_when_attached(self._listener))

    async def _rescan_when_attached(self, listener: StreamReader) -> None:
        """Once the listener is attached, read from its start once more for those still waiting.

        A record written while the listener (and a scan beside it) attached may
        be missed by both (stream_reader.py); one written after is not. So a
        scan that starts after the listener attached closes that window.
        """
        await listener.attached.wait()
        if self._waiters and self._listener is listener:
            self._scan_from(listener.offset)

    def _arrived(self, key: str, body: bytes) -> None:
        self._recent[key] = body
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
            # Records older than the ones still remembered may have been forgotten.
            if self._listener is not None and self._listener.last_seen is not None:
                self._horizon = self._listener.last_seen
        self._resolve(key, body)

    def _scanned_from(self, offset: datetime | str) -> bool:
        """True if a running scan started at ``offset`` or earlier ("first" is earliest)."""
        return any(
            isinstance(scan.offset, str) or (isinstance(offset, datetime) and scan.offset <= offset)
            for scan in self._scans
        )

    def _scan_from(self, offset: datetime | str) -> None:
        """Read the stream from ``offset`` on a scan that ends when nobody waits any more.

        What a scan reads is remembered with the listener's records, so a wait
        that begins after its record passed still finds it.
        """
        scan = StreamReader(self._broker, self._stream, offset, self._arrived)
        self._scans.append(scan)
        scan.start()

    def _resolve(self, key: str, body: bytes) -> None:
        for waiter in self._waiters.get(key, ()):
            if not waiter.done():
                waiter.set_result(body)

    async def close(self) -> None:
        """Stop reading the stream (the worker's connection is closing)."""
        rescan, self._rescan = self._rescan, None
        if rescan is not None:
            rescan.cancel()
            await asyncio.wait({rescan}, timeout=STOP_WAIT_S)
        listener, self._listener = self._listener, None
        scans, self._scans = self._scans, []
        self._horizon = None
        self._recent.clear()
        for reader in [*scans, *([listener] if listener is not None else [])]:
            await reader.stop()
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=STOP_WAIT_S)
        errand, self._errand = self._errand, None
        if errand is not None:
            await Broker.close_plain_channel(errand, STOP_WAIT_S)
        self._declared = False
