"""Batched confirms (amqp_worker._rabbitmq.confirms) with a recording channel; no broker.

What must hold: the publishes of one loop pass are written once, in delivery
tag order; each publisher learns its own tag's outcome, so a nack or a
return in the middle of a batch fails exactly the publishes it names; a
closed channel fails every publisher waiting on it; a deadline ends a wait.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

import pytest
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from amqp_worker._rabbitmq.confirms import Batch, ConfirmWindow
from amqp_worker._rabbitmq.frames import PublishFrames

PROPERTIES = b"\x00\x00"  # no property set


class FakeChannel:
    """What a window uses of an aiormq channel, with the frames it was given to write."""

    def __init__(self, queue_size: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self.number = 5
        self.max_content_size = 1000
        self.delivery_tag = 0
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(queue_size)
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        self.futures: list[asyncio.Future[Any]] = []
        self._closing: asyncio.Future[None] = loop.create_future()

    @property
    def is_closed(self) -> bool:
        return self._closing.done()

    @property
    def closing(self) -> asyncio.Future[None]:
        return self._closing

    def create_future(self) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        if self.is_closed:
            future.set_exception(ChannelInvalidStateError("closed"))
        self.futures.append(future)
        return future

    def close(self, exc: BaseException) -> None:
        """As aiormq does: every future it made gets the reason."""
        self._closing.set_result(None)
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)

    async def _get_frame(self) -> Any:
        return await self.frames.get()

    async def _read_content(self, frame: Any, header: ContentHeader) -> Any:
        size = 0
        while size < header.body_size:
            size += len((await self.frames.get()).value)
        return None

    # What aiormq's channel reader would call:
    async def confirm(self, frame: Basic.Ack | Basic.Nack) -> None:
        await self._on_confirm_frame(frame)  # type: ignore[attr-defined]

    async def returned(self, message_id: str, body: bytes = b"{}") -> None:
        header = ContentHeader(
            body_size=len(body), properties=Basic.Properties(message_id=message_id)
        )
        for frame in (header, ContentBody(body)):
            self.frames.put_nowait(frame)
        await self._on_return_frame(  # type: ignore[attr-defined]
            Basic.Return(reply_code=312, reply_text="NO_ROUTE", exchange="e", routing_key="k")
        )

    def busy(self) -> None:
        """Something else waits for the writer (a consumer's ack, say)."""
        self.write_queue.put_nowait(ChannelFrame(payload=BUSY, should_close=False))

    def written(self) -> list[bytes]:
        out = []
        while not self.write_queue.empty():
            payload = self.write_queue.get_nowait().payload
            if payload != BUSY:
                out.append(payload)
        return out


BUSY = b"busy"


async def make() -> tuple[FakeChannel, ConfirmWindow]:
    """A window on a busy connection: every publish of a pass joins that pass's batch."""
    channel = FakeChannel()
    channel.busy()
    return channel, ConfirmWindow(cast(Channel, channel))


def publish(window: ConfirmWindow, message_id: str, deadline: float = 1e12) -> tuple[Batch, int]:
    return window.publish("e", "k", b"{}", PROPERTIES, message_id, deadline)


async def one_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_one_loop_pass_is_one_write_in_tag_order() -> None:
    channel, window = await make()
    published = [publish(window, f"m{n}") for n in range(5)]
    assert [tag for _, tag in published] == [1, 2, 3, 4, 5]
    assert len({id(batch) for batch, _ in published}) == 1
    assert channel.written() == []  # not before the end of the pass
    await one_pass()
    frames = PublishFrames(5, 1000)
    expected = b"".join(b"".join(frames.encode("e", "k", b"{}", PROPERTIES)) for _ in range(5))
    assert channel.written() == [expected]
    assert channel.delivery_tag == 5
    # The next pass is the next batch.
    channel.busy()
    batch, tag = publish(window, "m5")
    assert tag == 6
    assert batch is not published[0][0]


async def test_on_a_quiet_connection_the_first_publish_goes_at_once() -> None:
    channel = FakeChannel()
    window = ConfirmWindow(cast(Channel, channel))
    first = publish(window, "m0")
    rest = [publish(window, f"m{n}") for n in range(1, 4)]
    frames = PublishFrames(5, 1000)
    one = b"".join(frames.encode("e", "k", b"{}", PROPERTIES))
    assert channel.written() == [one]  # before the end of the pass
    await one_pass()
    assert channel.written() == [one * 3]
    assert [tag for _, tag in [first, *rest]] == [1, 2, 3, 4]
    assert first[0] is not rest[0][0]
    assert len({id(batch) for batch, _ in rest}) == 1
    await channel.confirm(Basic.Ack(delivery_tag=4, multiple=True))
    await first[0].wait()
    await rest[0][0].wait()


async def test_a_multiple_ack_confirms_the_batch() -> None:
    channel, window = await make()
    published = [publish(window, f"m{n}") for n in range(3)]
    batch = published[0][0]
    waiter = asyncio.ensure_future(batch.wait())
    await one_pass()
    await channel.confirm(Basic.Ack(delivery_tag=2, multiple=True))
    await one_pass()
    assert not waiter.done()
    await channel.confirm(Basic.Ack(delivery_tag=3))
    await waiter
    assert [batch.outcome(tag) for _, tag in published] == [None, None, None]


async def test_a_nack_in_the_middle_of_a_batch_fails_exactly_that_publish() -> None:
    channel, window = await make()
    published = [publish(window, f"m{n}") for n in range(5)]
    batch = published[0][0]
    await one_pass()
    nack = Basic.Nack(delivery_tag=3)
    await channel.confirm(Basic.Ack(delivery_tag=5))
    await channel.confirm(nack)
    await channel.confirm(Basic.Ack(delivery_tag=2, multiple=True))
    await channel.confirm(Basic.Ack(delivery_tag=4))
    await batch.wait()
    assert [batch.outcome(tag) for _, tag in published] == [None, None, nack, None, None]


async def test_a_multiple_nack_fails_the_open_tags_it_covers() -> None:
    channel, window = await make()
    published = [publish(window, f"m{n}") for n in range(6)]
    batch = published[0][0]
    await one_pass()
    await channel.confirm(Basic.Ack(delivery_tag=3))  # confirmed before the nack
    await channel.confirm(Basic.Ack(delivery_tag=1, multiple=True))
    nack = Basic.Nack(delivery_tag=4, multiple=True)
    await channel.confirm(nack)
    await channel.confirm(Basic.Ack(delivery_tag=6, multiple=True))
    await batch.wait()
    assert [batch.outcome(tag) for _, tag in published] == [None, nack, None, nack, None, None]


async def test_acks_across_batches_settle_each_batch_once() -> None:
    channel, window = await make()
    first = [publish(window, f"a{n}") for n in range(3)]
    await one_pass()
    channel.busy()
    second = [publish(window, f"b{n}") for n in range(3)]
    await one_pass()
    assert len(channel.written()) == 2
    await channel.confirm(Basic.Ack(delivery_tag=4, multiple=True))
    await first[0][0].wait()
    assert not second[0][0].future.done()
    await channel.confirm(Basic.Ack(delivery_tag=6, multiple=True))
    await second[0][0].wait()
    await channel.confirm(Basic.Ack(delivery_tag=6, multiple=True))  # a repeat changes nothing


async def test_a_return_fails_the_returned_publish_only() -> None:
    channel, window = await make()
    published = [publish(window, f"m{n}") for n in range(4)]
    batch = published[0][0]
    await one_pass()
    await channel.returned("m2")
    await channel.confirm(Basic.Ack(delivery_tag=4, multiple=True))
    await batch.wait()
    outcomes = [batch.outcome(tag) for _, tag in published]
    assert outcomes[:2] == [None, None]
    assert outcomes[3] is None
    assert isinstance(outcomes[2], Basic.Return)
    assert channel.frames.empty()  # the returned message's frames were read


async def test_a_return_of_an_id_in_flight_twice_fails_both() -> None:
    # A return names only the message: never report success for a returned copy.
    channel, window = await make()
    published = [publish(window, m) for m in ("same", "other", "same")]
    batch = published[0][0]
    await one_pass()
    await channel.returned("same")
    await channel.confirm(Basic.Ack(delivery_tag=3, multiple=True))
    await batch.wait()
    kinds = [type(batch.outcome(tag)) for _, tag in published]
    assert kinds == [Basic.Return, type(None), Basic.Return]


async def test_a_closed_channel_fails_every_waiter_with_the_reason() -> None:
    channel, window = await make()
    early = publish(window, "m0")[0]
    await one_pass()
    assert len(channel.written()) == 1
    channel.busy()
    late = publish(window, "m1")[0]  # not written yet when the channel closes
    waiters = [asyncio.ensure_future(b.wait()) for b in (early, late)]
    channel.close(ConnectionResetError("cut"))
    for waiter in waiters:
        with pytest.raises(ConnectionResetError):
            await waiter
    assert not window.usable
    with pytest.raises(ChannelInvalidStateError):
        publish(window, "m2")
    await one_pass()
    assert channel.written() == []  # the late frames never go to a closed channel number


async def test_a_batch_past_its_deadline_fails_with_timeout() -> None:
    channel, window = await make()
    loop = asyncio.get_running_loop()
    slow = publish(window, "m0", deadline=loop.time() + 0.01)[0]
    await one_pass()
    channel.busy()
    patient = publish(window, "m1", deadline=loop.time() + 3600)[0]
    with pytest.raises(TimeoutError):
        await slow.wait()
    assert not patient.future.done()
    await channel.confirm(Basic.Ack(delivery_tag=2, multiple=True))  # the late ack is ignored
    await patient.wait()


async def test_a_shorter_deadline_after_a_longer_one_still_ends_its_wait() -> None:
    channel, window = await make()
    loop = asyncio.get_running_loop()
    patient = publish(window, "m0", deadline=loop.time() + 3600)[0]
    await one_pass()
    channel.busy()
    hurried = publish(window, "m1", deadline=loop.time() + 0.01)[0]  # a retry, late already
    with pytest.raises(TimeoutError):
        await hurried.wait()
    assert not patient.future.done()


async def test_one_cancelled_waiter_leaves_the_others_waiting() -> None:
    channel, window = await make()
    batch, _ = publish(window, "m0")
    publish(window, "m1")
    cancelled = asyncio.ensure_future(batch.wait())
    patient = asyncio.ensure_future(batch.wait())
    await one_pass()
    cancelled.cancel()
    await one_pass()
    assert cancelled.cancelled()
    assert not patient.done()
    await channel.confirm(Basic.Ack(delivery_tag=2, multiple=True))
    await patient


async def test_a_confirm_between_a_cancellation_and_the_next_wait_is_not_missed() -> None:
    channel, window = await make()
    batch, _ = publish(window, "m0")
    cancelled = asyncio.ensure_future(batch.wait())
    patient = asyncio.ensure_future(batch.wait())
    await one_pass()
    cancelled.cancel()  # cancels the shared future at once
    await channel.confirm(Basic.Ack(delivery_tag=1))  # before the other waiter runs again
    await patient
    assert cancelled.cancelled()


async def test_a_full_writer_queue_keeps_the_order() -> None:
    channel = FakeChannel(queue_size=1)
    window = ConfirmWindow(cast(Channel, channel))
    channel.busy()  # the writer is behind: the queue is full
    for n in range(3):
        publish(window, f"m{n}")
        await one_pass()
    frames = PublishFrames(5, 1000)
    one = b"".join(frames.encode("e", "k", b"{}", PROPERTIES))
    written = b""
    for _ in range(20):
        written += b"".join(channel.written())
        await asyncio.sleep(0)
    assert written == one * 3  # in order, behind what was there first


async def test_seal_writes_the_batch_so_far() -> None:
    channel, window = await make()
    first, _ = publish(window, "m0")
    window.seal()
    assert len(channel.written()) == 1
    second, tag = publish(window, "m1")
    assert second is not first
    assert tag == 2
    await one_pass()
    assert len(channel.written()) == 1


def test_the_aiormq_channel_still_has_what_a_window_takes_over() -> None:
    # The window replaces two frame handlers and reads returns with aiormq's readers.
    for name in ("_on_confirm_frame", "_on_return_frame", "_get_frame", "_read_content"):
        assert inspect.iscoroutinefunction(getattr(Channel, name)), name
    init = inspect.getsource(Channel.__init__)
    for attribute in ("self.delivery_tag", "self.write_queue", "self.max_content_size"):
        assert attribute in init, attribute
