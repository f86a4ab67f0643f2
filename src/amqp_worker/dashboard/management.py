"""A small client of RabbitMQ's management HTTP API, for what AMQP cannot tell.

AMQP answers ready messages and consumer counts (a passive declare). The
management API adds unacknowledged counts, publish/deliver/ack rates, the
consumers themselves (connection, peer, prefetch), and the bindings that let
the dashboard discover job queues. Everything here is optional: the
dashboard works over AMQP alone and says what it cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from amqp_worker._rabbitmq.redact import describe_url

__all__ = ["ConsumerInfo", "ManagementAPI", "ManagementUnavailable", "QueueInfo"]

#: Seconds a management request may take; the overview refreshes every few seconds.
TIMEOUT_S = 5.0


class ManagementUnavailable(Exception):
    """The management API could not answer; the message never holds credentials."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue as the management API sees it."""

    name: str
    ready: int
    unacked: int
    consumers: int
    publish_rate: float
    """Messages per second published into the queue (recent average)."""
    deliver_rate: float
    """Messages per second delivered to consumers."""
    ack_rate: float


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of a queue."""

    queue: str
    tag: str
    connection: str
    """The connection's client-given name (``connection_name``), else the broker's."""
    peer: str
    prefetch: int
    active: bool


def _rate(stats: Any, key: str) -> float:
    details = stats.get(f"{key}_details") if isinstance(stats, dict) else None
    rate = details.get("rate") if isinstance(details, dict) else None
    return float(rate) if isinstance(rate, int | float) else 0.0


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


class ManagementAPI:
    """The management API at ``url`` for ``vhost``; credentials from ``url``, else ``fallback``."""

    def __init__(self, url: str, vhost: str, fallback: tuple[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.username is not None:
            credentials: tuple[str, str] | None = (
                unquote(parts.username),
                unquote(parts.password or ""),
            )
        else:
            credentials = fallback
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.where = describe_url(base)
        self.vhost = vhost
        self._client = httpx.AsyncClient(base_url=base, auth=credentials, timeout=TIMEOUT_S)

    def __repr__(self) -> str:
        return f"<ManagementAPI {self.where}>"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, **params: str) -> Any:
        try:
            response = await self._client.get(path, params=params or None)
        except httpx.HTTPError as exc:
            raise ManagementUnavailable(f"{self.where}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ManagementUnavailable(f"{self.where}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ManagementUnavailable(f"{self.where}: not JSON") from None

    @property
    def _vhost(self) -> str:
        return quote(self.vhost, safe="")

    async def queues(self) -> dict[str, QueueInfo]:
        """Every queue of the vhost, by name."""
        rows = await self._get(
            f"/api/queues/{self._vhost}",
            columns="name,messages_ready,messages_unacknowledged,consumers,message_stats",
        )
        found: dict[str, QueueInfo] = {}
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict) or not isinstance(row.get("name"), str):
                continue
            stats = row.get("message_stats") or {}
            found[row["name"]] = QueueInfo(
                name=row["name"],
                ready=_int(row.get("messages_ready")),
                unacked=_int(row.get("messages_unacknowledged")),
                consumers=_int(row.get("consumers")),
                publish_rate=_rate(stats, "publish"),
                deliver_rate=_rate(stats, "deliver_get"),
                ack_rate=_rate(stats, "ack"),
            )
        return found

    async def _connection_names(self) -> dict[str, str]:
        """The name each client gave its connection, by the broker's name for it.

        A user without the monitoring tag sees only its own connections; the
        others keep the broker's name (``ip:port -> ip:port``).
        """
        rows = await self._get(
            f"/api/vhosts/{self._vhost}/connections", columns="name,user_provided_name"
        )
        return {
            str(row["name"]): str(row["user_provided_name"])
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict) and row.get("name") and row.get("user_provided_name")
        }

    async def consumers(self) -> list[ConsumerInfo]:
        """Every consumer of the vhost, with its connection's client-given name where known."""
        rows = await self._get(f"/api/consumers/{self._vhost}")
        names = await self._connection_names()
        found: list[ConsumerInfo] = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, dict):
                continue
            queue = row.get("queue") or {}
            # Empty ([]) for a moment after a consumer starts, until the broker's stats fill it.
            channel = row.get("channel_details")
            channel = channel if isinstance(channel, dict) else {}
            # channel_details names the connection as the broker does: ip:port -> ip:port.
            broker_name = str(channel.get("connection_name") or "")
            peer = f"{channel.get('peer_host', '?')}:{channel.get('peer_port', '?')}"
            found.append(
                ConsumerInfo(
                    queue=str(queue.get("name", "")),
                    tag=str(row.get("consumer_tag", "")),
                    connection=names.get(broker_name) or broker_name,
                    peer=peer,
                    prefetch=_int(row.get("prefetch_count")),
                    active=bool(row.get("active", True)),
                )
            )
        return found

    async def bound_queues(self, exchange: str) -> list[str]:
        """The routing keys bound from ``exchange`` to queues: the job queues of a worker name."""
        rows = await self._get(
            f"/api/exchanges/{self._vhost}/{quote(exchange, safe='')}/bindings/source"
        )
        keys = [
            str(row["routing_key"])
            for row in (rows if isinstance(rows, list) else [])
            if isinstance(row, dict) and row.get("destination_type") == "queue"
        ]
        return sorted(dict.fromkeys(keys))
