"""A TCP proxy for network faults: drop every connection at once, or hold one silent.

It listens on 127.0.0.1 (an ephemeral port) and forwards each connection to
a target. :meth:`TcpProxy.drop_all` closes both sides of every connection
with a reset (``SO_LINGER`` 0, nothing flushed): to both peers it looks like
a cut cable followed by a reset. :meth:`TcpProxy.hold` stops forwarding in
both directions for a while without closing anything: the peers see a
connection that went silent (no data, no heartbeats, no FIN), which is what a
dead router looks like. Data and closes that arrive during a hold are
delivered when it ends. Connections made during a hold flow normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["TcpProxy"]

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.flowing.set()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket at once with a TCP reset, dropping unsent data."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``; see the module doc."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.accepted = 0
        """Connections accepted so far."""
        self.drops = 0
        """Connections closed by :meth:`drop_all` so far."""

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._links)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.drop_all()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def drop_all(self) -> int:
        """Reset both sides of every open connection; return how many were dropped."""
        links = list(self._links)
        self._links.clear()
        for link in links:
            link.dropped = True
            link.flowing.set()  # let held pumps wake up and see the drop
            _reset(link.client)
            _reset(link.upstream)
            for task in link.tasks:
                task.cancel()
        for link in links:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        self.drops += len(links)
        return len(links)

    async def hold(self, seconds: float) -> int:
        """Forward nothing on the open connections for ``seconds``; return how many were held.

        Nothing is closed: after ``seconds`` the data (and closes) that
        arrived meanwhile are delivered, unless :meth:`drop_all` came first.
        """
        links = list(self._links)
        for link in links:
            link.flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            for link in links:
                link.flowing.set()
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        """Copy ``source`` to ``sink`` while ``link`` flows; on EOF or error close the link."""
        try:
            while True:
                data = await source.read(CHUNK)
                await link.flowing.wait()
                if link.dropped or not data:
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.dropped:
                # One side ended (or failed): end the other side too, as a router would.
                self._links.discard(link)
                link.dropped = True
                link.client.close()
                link.upstream.close()
