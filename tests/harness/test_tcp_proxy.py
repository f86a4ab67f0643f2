"""The fault-injecting TCP proxy of tests/harness/tcp_proxy.py, against a local echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.harness.tcp_proxy import TcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with TcpProxy("127.0.0.1", port) as started:
        yield started
    server.close()
    await server.wait_closed()


async def _connect(proxy: TcpProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"  # connected end to end
    return reader, writer


async def test_it_forwards_both_ways(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"x" * 200_000)
    assert await reader.readexactly(200_000) == b"x" * 200_000
    assert proxy.connections == 1
    writer.close()
    await writer.wait_closed()


async def test_drop_all_resets_every_connection(proxy: TcpProxy) -> None:
    first, second = await _connect(proxy), await _connect(proxy)
    assert await proxy.drop_all() == 2
    for reader, writer in (first, second):
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await reader.readexactly(1)  # reset (or at least closed), never more data
        writer.close()
    assert proxy.connections == 0
    # New connections work after a drop.
    _, writer = await _connect(proxy)
    writer.close()
    assert (proxy.accepted, proxy.drops) == (3, 2)


async def test_hold_forwards_nothing_until_it_ends(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    hold = asyncio.create_task(proxy.hold(3600))
    await asyncio.sleep(0)  # the hold has begun
    writer.write(b"during")
    read = asyncio.create_task(reader.readexactly(6))
    # Let the bytes reach the proxy (a few loop turns), then check nothing came back.
    for _ in range(50):
        await asyncio.sleep(0)
    assert not read.done()
    assert proxy.connections == 1  # silent, not closed
    hold.cancel()  # ends the hold: what arrived meanwhile is delivered
    assert await read == b"during"
    writer.close()


async def test_a_connection_made_during_a_hold_flows(proxy: TcpProxy) -> None:
    _, held = await _connect(proxy)
    hold = asyncio.create_task(proxy.hold(3600))
    await asyncio.sleep(0)
    _, fresh = await _connect(proxy)  # a new connection is not held
    hold.cancel()
    await proxy.drop_all()
    held.close()
    fresh.close()


async def test_a_drop_during_a_hold_closes_the_held_connection(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    hold = asyncio.create_task(proxy.hold(3600))
    await asyncio.sleep(0)
    await proxy.drop_all()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await reader.readexactly(1)
    hold.cancel()
    writer.close()
