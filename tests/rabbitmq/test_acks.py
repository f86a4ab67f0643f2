"""Batched acks (amqp_worker._rabbitmq.acks): which frames go out, with a recording channel; no broker.

The rule under test: a ``multiple`` ack never covers a delivery that is still
open (running, held, being handed back), and every queued ack is written by
the end of the loop pass it was queued in.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from amqp_worker._rabbitmq.acks import MAX_BATCH, AckBatcher


class FakeChannel:
    """An aiormq channel that records the acks written to it."""

    def __init__(self) -> None:
        self.is_closed = False
        self.frames: list[tuple[int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.is_closed:
            from aiormq.exceptions import ChannelInvalidStateError

            raise ChannelInvalidStateError("closed")
        self.frames.append((delivery_tag, multiple))

    def acked(self) -> set[int]:
        """Every tag the frames so far ack, given which tags were delivered (1..max)."""
        done: set[int] = set()
        for tag, multiple in self.frames:
            done |= set(range(1, tag + 1)) if multiple else {tag}
        return done


class FakeMessage:
    """An incoming message: a delivery tag on a channel."""

    def __init__(self, channel: FakeChannel, tag: int) -> None:
        self._channel = channel
        self.delivery_tag = tag

    @property
    def channel(self) -> FakeChannel:
        if self._channel.is_closed:
            raise RuntimeError("closed")  # as aio-pika's ChannelInvalidStateError
        return self._channel


def deliver(batcher: AckBatcher, channel: FakeChannel, tags: range) -> list[FakeMessage]:
    messages = [FakeMessage(channel, tag) for tag in tags]
    for message in messages:
        batcher.delivered(message)  # type: ignore[arg-type]
    return messages


async def settle(batcher: AckBatcher) -> None:
    await batcher.wait()


async def test_acks_of_one_loop_pass_go_out_as_one_multiple_ack() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, 11))
    for message in messages:
        assert batcher.ack(message)  # type: ignore[arg-type]
    assert channel.frames == []  # nothing written before the loop pass ends
    await settle(batcher)
    assert channel.frames == [(10, True)]


async def test_a_multiple_ack_never_covers_an_open_delivery() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, 11))
    # 4 still runs; 1-3 and 5-10 succeeded.
    for message in messages[:3] + messages[4:]:
        batcher.ack(message)  # type: ignore[arg-type]
    await settle(batcher)
    assert channel.frames[0] == (3, True)
    assert sorted(channel.frames[1:]) == [(tag, False) for tag in range(5, 11)]
    assert 4 not in channel.acked()
    batcher.ack(messages[3])  # type: ignore[arg-type]
    await settle(batcher)
    assert channel.acked() == set(range(1, 11))
    assert channel.frames[-1] == (4, False)


async def test_a_delivery_being_handed_back_stays_open_until_its_nack_is_written() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, 4))
    batcher.ack(messages[0])  # type: ignore[arg-type]
    batcher.ack(messages[2])  # type: ignore[arg-type]
    await settle(batcher)  # 2 is being handed back: not covered
    assert 2 not in channel.acked()
    batcher.settled(messages[1])  # type: ignore[arg-type]
    assert not batcher.queued(messages[1])  # type: ignore[arg-type]


async def test_a_single_ack_below_the_open_delivery_is_a_plain_ack() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, 3))
    batcher.ack(messages[0])  # type: ignore[arg-type]
    await settle(batcher)
    assert channel.frames == [(1, False)]


async def test_max_batch_acks_are_written_without_waiting_for_the_loop_pass() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, MAX_BATCH + 2))
    for message in messages[:MAX_BATCH]:
        batcher.ack(message)  # type: ignore[arg-type]
    assert batcher.pending == 1  # the write task of the first batch
    await asyncio.sleep(0)
    assert channel.frames == [(MAX_BATCH, True)]


async def test_unrecorded_messages_and_closed_channels_are_not_queued() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    stranger = FakeMessage(channel, 7)
    assert not batcher.ack(stranger)  # type: ignore[arg-type]  # the caller acks it alone
    messages = deliver(batcher, channel, range(1, 3))
    channel.is_closed = True
    assert not batcher.ack(messages[0])  # type: ignore[arg-type]


async def test_acks_are_per_channel_and_a_channel_closed_before_the_write_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batcher = AckBatcher()
    first, second = FakeChannel(), FakeChannel()
    one = deliver(batcher, first, range(1, 3))
    two = deliver(batcher, second, range(1, 3))
    for message in one + two:
        batcher.ack(message)  # type: ignore[arg-type]
    first.is_closed = True  # a reconnect between the ack and the end of the loop pass
    with caplog.at_level(logging.WARNING, logger="amqp_worker"):
        await settle(batcher)
    assert first.frames == []
    assert second.frames == [(2, True)]
    assert "could not ack 2 job(s)" in caplog.text
    assert "RabbitMQ redelivers them" in caplog.text


async def test_acking_twice_queues_once() -> None:
    batcher, channel = AckBatcher(), FakeChannel()
    messages = deliver(batcher, channel, range(1, 2))
    assert batcher.ack(messages[0])  # type: ignore[arg-type]
    assert batcher.ack(messages[0])  # type: ignore[arg-type]
    assert batcher.queued(messages[0])  # type: ignore[arg-type]
    await settle(batcher)
    assert channel.frames == [(1, False)]
    assert not batcher.queued(messages[0])  # type: ignore[arg-type]


class SlowChannel(FakeChannel):
    """A channel whose first ack waits until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        await self.gate.wait()
        await super().basic_ack(delivery_tag, multiple, wait)


async def test_a_later_pass_never_overtakes_an_earlier_one_on_a_channel() -> None:
    # Found in the controls bench: pass 1 wrote channel A's acks and yielded before
    # channel B's; pass 2's multiple ack on B then covered pass 1's, and RabbitMQ
    # closed B ("unknown delivery tag"): its jobs ran twice.
    batcher, slow, channel = AckBatcher(), SlowChannel(), FakeChannel()
    first = deliver(batcher, slow, range(1, 2))
    messages = deliver(batcher, channel, range(1, 7))
    for message in first + messages[:3]:
        batcher.ack(message)  # type: ignore[arg-type]
    batcher.flush()  # pass 1: slow's 1, then channel's 1-3
    for message in messages[3:]:
        batcher.ack(message)  # type: ignore[arg-type]
    batcher.flush()  # pass 2: channel's 4-6
    for _ in range(5):
        await asyncio.sleep(0)
    assert channel.frames == []  # pass 2 waits for pass 1, which waits for slow
    slow.gate.set()
    await settle(batcher)
    assert slow.frames == [(1, False)]
    assert channel.frames == [(3, True), (6, True)]
