"""How the results and cancels readers order their work around a reader's attach, without a broker.

A record written while a stream consumer attaches may be missed by it (see
``_rabbitmq/stream_reader.py``): these tests stand in for the reader and
check what each side does once it is attached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

import pytest

from amqp_worker._rabbitmq import results
from amqp_worker._rabbitmq.broker import Broker
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.errors import ResultTimeout


class FakeReader:
    """A StreamReader that never connects; the test says when it is attached."""

    made: ClassVar[list[FakeReader]] = []

    def __init__(
        self,
        broker: Broker,
        stream: str,
        offset: datetime | str,
        on_record: Callable[[str, bytes], None],
    ) -> None:
        self.offset = offset
        self.on_record = on_record
        self.attached = asyncio.Event()
        self.last_seen: datetime | None = None
        self.running = False
        FakeReader.made.append(self)

    def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False


async def test_a_first_wait_reads_again_from_the_listeners_start_once_it_is_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeReader.made = []
    monkeypatch.setattr(results, "StreamReader", FakeReader)
    store = results.RabbitResults(Broker(AMQPSettings(name="app")))
    store._declared = True  # nothing to declare: no broker here
    waiting = asyncio.ensure_future(store.wait("job-1", 30, None))
    await asyncio.sleep(0)
    listener, scan = FakeReader.made
    assert scan.offset == "first"
    assert isinstance(listener.offset, datetime)
    listener.attached.set()
    for _ in range(3):
        await asyncio.sleep(0)
    # A scan that starts after the listener attached: what the two racing readers
    # may have missed is read now (a scan from "first" is running, and still it starts).
    assert [reader.offset for reader in FakeReader.made[2:]] == [listener.offset]
    FakeReader.made[2].on_record("job-1", b"{}")
    assert await waiting == b"{}"
    assert not any(reader.running for reader in FakeReader.made[1:])  # scans end with the wait
    await store.close()
    assert not listener.running


async def test_no_second_read_once_nobody_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeReader.made = []
    monkeypatch.setattr(results, "StreamReader", FakeReader)
    store = results.RabbitResults(Broker(AMQPSettings(name="app")))
    store._declared = True
    store._arrived("job-1", b"{}")  # already remembered: found without a listener
    assert await store.wait("job-1", 30, None) == b"{}"
    assert FakeReader.made == []
    with pytest.raises(ResultTimeout, match="no result of job-2"):
        await store.wait("job-2", 0.01, None)
    listener = FakeReader.made[0]
    listener.attached.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(FakeReader.made) == 2  # the listener and the one scan of the timed-out wait
    await store.close()
