"""``GET /healthz`` for probes: a tiny HTTP/1.1 responder on ``asyncio.start_server``.

200 while the worker runs and its broker connection is open, 503 otherwise.
Only ``GET`` and ``HEAD`` of ``/healthz`` are served; one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .common import CLIError, ExitCode

__all__ = ["serve_health", "start_health_server"]

logger = logging.getLogger("amqp_worker.cli")

#: Longest a client may take to send its request line and headers.
READ_TIMEOUT_S = 5.0
#: Largest request head read; probes send a few hundred bytes.
MAX_HEAD_BYTES = 8192

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _response(status: int, body: str, head_only: bool = False) -> bytes:
    payload = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else payload)


def respond(request_line: str, healthy: Callable[[], bool]) -> bytes:
    """The response to one request line (``GET /healthz HTTP/1.1``)."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response(400, "bad request\n")
    method, target, _ = parts
    path = target.split("?", 1)[0]
    if path != "/healthz":
        return _response(404, "not found\n")
    if method not in ("GET", "HEAD"):
        return _response(405, "method not allowed\n")
    ok = healthy()
    return _response(200 if ok else 503, "ok\n" if ok else "unavailable\n", method == "HEAD")


async def _serve(
    healthy: Callable[[], bool], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        writer.write(respond(line, healthy))
        await writer.drain()
    except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        with contextlib.suppress(ConnectionError):
            writer.write(_response(400, "bad request\n"))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_health_server(host: str, port: int, healthy: Callable[[], bool]) -> asyncio.Server:
    """Serve ``/healthz`` on ``host:port`` until the returned server is closed."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(healthy, reader, writer)

    server = await asyncio.start_server(serve, host, port, limit=MAX_HEAD_BYTES)
    bound = ", ".join(f"{sock.getsockname()[0]}:{sock.getsockname()[1]}" for sock in server.sockets)
    logger.info("health check on http://%s/healthz", bound)
    return server


async def serve_health(
    endpoint: tuple[str, int] | None, healthy: Callable[[], bool]
) -> asyncio.Server | None:
    """:func:`start_health_server` on ``endpoint`` (None: no server); a port in use is a CLIError."""
    if endpoint is None:
        return None
    host, port = endpoint
    try:
        return await start_health_server(host, port, healthy)
    except OSError as exc:
        raise CLIError(
            f"cannot serve the health check on {host}:{port}: {exc.strerror or exc}",
            ExitCode.CONFIG,
        ) from None
