"""Publishing on one channel: one write per loop pass, one confirm waiter per batch.

aiormq's ``basic_publish`` takes the channel lock, marshals three frames
through pamqp, queues them for the connection's writer, waits for the socket
to drain, and waits for a future of its own that the confirm resolves: per
publish, two futures, the lock and a socket write. A :class:`ConfirmWindow`
does the waiting and the writing once per *batch*, all the publishes made
during one pass of the event loop:

- each publish takes the channel's next delivery tag at once and appends its
  frames (:mod:`amqp_worker._rabbitmq.frames`) to the batch;
- at the end of the pass the batch goes to the connection's writer as one
  payload: one socket write for every publish of the pass. The first publish
  after a quiet spell goes to the writer at once, alone, so one publish at a
  time waits no longer than with aiormq;
- the batch has one future, resolved when the broker has confirmed (acked or
  nacked) every tag in it. Each publisher then reads its own tag's outcome:
  a ``basic.nack`` or a ``basic.return`` fails exactly the tags it names.

The window reads the channel's ``basic.ack`` / ``basic.nack`` / ``basic.return``
frames itself: it takes over aiormq's two handlers on that channel, which
must then be used for nothing else, and reads a return's content with
aiormq's own readers (``tests/rabbitmq/test_confirms.py`` checks that an
aiormq upgrade still has them). A return names no delivery tag, only the
message: it fails every unconfirmed publish of this window with that message
id, so a job performed twice at once whose one copy was returned fails both
(at worst a duplicate on retry, never a success reported for a returned job).

Batch futures are the channel's own (``create_future``): when the channel
or its connection closes, aiormq rejects them with the reason, and the
publishers wait out the outage (:mod:`amqp_worker._rabbitmq.confirmed`). A
batch not confirmed by the earliest deadline of its publishes fails with
``TimeoutError``; one timer per window checks the deadlines.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiormq.exceptions as amqp_errors
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel as UnderlyingChannel
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from .frames import PublishFrames

__all__ = ["Batch", "ConfirmWindow", "Failure"]

#: What failed one publish: the broker's nack, or the return of an unroutable message
#: (aiormq types a confirm as a reject too; the broker never sends one).
Failure = Basic.Nack | Basic.Reject | Basic.Return


class Batch:
    """The publishes of one loop pass on one channel: delivery tags ``first`` to ``last``."""

    __slots__ = (
        "_channel",
        "confirmed",
        "deadline",
        "expired",
        "failed",
        "first",
        "future",
        "ids",
        "last",
        "settled",
    )

    def __init__(self, channel: UnderlyingChannel, first: int, deadline: float) -> None:
        self._channel = channel
        self.first = first
        self.last = first - 1
        #: Tags confirmed out of order (single acks and nacks above the lowest open tag).
        self.confirmed: set[int] = set()
        self.failed: dict[int, Failure] = {}
        self.ids: list[str] = []
        """The message id of each tag, from ``first`` on."""
        self.deadline = deadline
        self.settled = False
        """Every tag confirmed: each publish's outcome is known."""
        self.expired = False
        """The deadline passed first."""
        self.future: asyncio.Future[None] = channel.create_future()

    def outcome(self, tag: int) -> Failure | None:
        """What failed the publish of ``tag`` (None: the broker took it); once :meth:`wait` returned."""
        return self.failed.get(tag) if self.failed else None

    async def wait(self) -> None:
        """Wait until every tag is confirmed; raise ``TimeoutError`` past the deadline, or what closed the channel.

        Several publishers share the future. One of them being cancelled
        cancels the future too; the others, not cancelled themselves, then
        wait on a fresh one. The batch's own state, not the future, says
        whether it is over, so a confirm that came meanwhile is never missed.
        """
        while True:
            if self.settled:
                return
            if self.expired:
                raise TimeoutError
            future = self.future
            try:
                await future
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.cancelled() or (task is not None and task.cancelling()):
                    raise
                if self.future is future:
                    self.future = self._channel.create_future()

    def _settle(self) -> None:
        self.settled = True
        if not self.future.done():
            self.future.set_result(None)

    def _expire(self) -> None:
        self.expired = True
        if not self.future.done():
            self.future.set_exception(TimeoutError())


class ConfirmWindow:
    """Confirmed, ``mandatory`` publishing on one aiormq channel in confirm mode."""

    def __init__(self, channel: UnderlyingChannel) -> None:
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        self._frames = PublishFrames(channel.number, channel.max_content_size)
        self._pending: list[bytes] = []
        self._open: Batch | None = None
        """The batch that takes this loop pass's publishes, until it is written."""
        self._unconfirmed: deque[Batch] = deque()
        """Written (or about to be), oldest first."""
        self._backlog: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.retired = False
        """Set after a nack: take no new publishes (confirms still count)."""
        # The window reads this channel's confirms and returns from now on (see above).
        channel._on_confirm_frame = self._on_confirm  # type: ignore[method-assign]
        channel._on_return_frame = self._on_return  # type: ignore[method-assign]
        channel.closing.add_done_callback(self._closed)

    @property
    def channel(self) -> UnderlyingChannel:
        return self._channel

    @property
    def usable(self) -> bool:
        """True while new publishes may go to this window."""
        return not self.retired and not self._channel.is_closed

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: bytes,
        message_id: str,
        deadline: float,
    ) -> tuple[Batch, int]:
        """Queue one publish for this loop pass's write; return its batch and delivery tag.

        ``properties`` are encoded (:mod:`amqp_worker._rabbitmq.frames`). Raises
        ``ChannelInvalidStateError`` if the channel has closed, and the
        encoders' errors for a name that cannot be written; then nothing was queued.
        """
        frames = self._frames.encode(exchange, routing_key, body, properties)
        channel = self._channel
        if channel.is_closed:
            raise amqp_errors.ChannelInvalidStateError(f"{channel!r} closed")
        channel.delivery_tag = tag = channel.delivery_tag + 1
        batch = self._open
        if batch is None:
            batch = Batch(channel, tag, deadline)
            self._unconfirmed.append(batch)
            if self._writer is None and channel.write_queue.empty():
                # Nothing waits to be written: this one goes to the writer at once (a
                # loop pass sooner: what one publish at a time waits for). Publishes
                # that follow in this pass batch up behind it.
                self._pending += frames
                self._flush()
            else:
                self._pending += frames
                self._open = batch
                self._loop.call_soon(self._flush)
        else:
            self._pending += frames
            batch.deadline = min(batch.deadline, deadline)
        timer = self._timer
        if timer is None or deadline < timer.when():
            # A publish that waited out an outage has less time left than the others.
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)
        batch.last = tag
        batch.ids.append(message_id)
        return batch, tag

    def seal(self) -> None:
        """Write the batch being filled now, and start a new one with the next publish.

        Bulk publishing seals every few publishes, so confirms of the first
        batches come back while later ones are written.
        """
        if self._open is not None:
            self._flush()

    # -- writing --------------------------------------------------------------

    def _flush(self) -> None:
        self._open = None
        if not self._pending:
            return  # sealed earlier in this loop pass
        payload = b"".join(self._pending)
        self._pending.clear()
        if self._channel.is_closed:
            return  # never write on a closed channel number; its batches were rejected
        if self._writer is not None:
            self._backlog.append(payload)
            return
        try:
            self._channel.write_queue.put_nowait(ChannelFrame(payload=payload, should_close=False))
        except asyncio.QueueFull:
            # The writer is behind: keep the order, hand over the rest as it catches up.
            self._backlog.append(payload)
            self._writer = asyncio.ensure_future(self._write_backlog())

    async def _write_backlog(self) -> None:
        try:
            while self._backlog and not self._channel.is_closed:
                payload = b"".join(self._backlog)
                self._backlog.clear()
                await self._channel.write_queue.put(
                    ChannelFrame(payload=payload, should_close=False)
                )
        finally:
            self._writer = None

    def _closed(self, _: object) -> None:
        self._backlog.clear()
        if self._writer is not None:
            self._writer.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- confirms -------------------------------------------------------------

    async def _on_confirm(self, frame: Basic.Ack | Basic.Nack | Basic.Reject) -> None:
        tag = frame.delivery_tag or 0
        failure = None if isinstance(frame, Basic.Ack) else frame
        batches = self._unconfirmed
        if getattr(frame, "multiple", False):
            while batches and batches[0].first <= tag:
                batch = batches[0]
                upto = min(tag, batch.last)
                if failure is not None:
                    for each in range(batch.first, upto + 1):
                        if each not in batch.confirmed:
                            batch.failed.setdefault(each, failure)
                if upto < batch.last:
                    # Part of the batch: its lowest open tag moves up.
                    batch.confirmed = {t for t in batch.confirmed if t > upto}
                    batch.ids = batch.ids[upto + 1 - batch.first :]
                    batch.first = upto + 1
                    if len(batch.confirmed) < batch.last - upto:
                        return
                batches.popleft()
                batch._settle()
            return
        for index, batch in enumerate(batches):
            if batch.first <= tag <= batch.last:
                if tag in batch.confirmed:
                    return
                batch.confirmed.add(tag)
                if failure is not None:
                    batch.failed.setdefault(tag, failure)
                if len(batch.confirmed) == batch.last - batch.first + 1:
                    del batches[index]
                    batch._settle()
                return

    async def _on_return(self, frame: Basic.Return) -> None:
        # Read what follows the return on the channel: its header, then its body.
        header = await self._channel._get_frame()
        if not isinstance(header, ContentHeader):
            raise ValueError(f"Unexpected frame {header!r} instead of ContentHeader", header)
        await self._channel._read_content(frame, header)
        message_id = header.properties.message_id
        for batch in self._unconfirmed:
            for offset, each in enumerate(batch.ids):
                tag = batch.first + offset
                if each == message_id and tag not in batch.confirmed:
                    batch.failed.setdefault(tag, frame)

    # -- deadlines ------------------------------------------------------------

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        late = [batch for batch in self._unconfirmed if batch.deadline <= now]
        for batch in late:
            self._unconfirmed.remove(batch)
            batch._expire()
        if self._unconfirmed:
            deadline = min(batch.deadline for batch in self._unconfirmed)
            self._timer = self._loop.call_at(deadline, self._expire)
