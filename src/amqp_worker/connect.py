"""Dialling RabbitMQ: bounded retries, one typed error, no credentials in messages."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractConnection

from .errors import BrokerUnavailable
from .settings import AMQPSettings

__all__ = ["dial", "scrub_url"]

logger = logging.getLogger("amqp_worker")

#: The longest one connection attempt may take, so a hung TCP connect is retried.
ATTEMPT_TIMEOUT_S = 10.0


def scrub_url(settings: AMQPSettings, text: str) -> str:
    """``text`` with the secret URL and its password replaced, for messages and logs."""
    secret = settings.url.get_secret_value()
    password = urlsplit(secret).password
    text = text.replace(secret, settings.broker)
    return text.replace(password, "***") if password else text


async def dial(
    settings: AMQPSettings,
    timeout_s: float,
    *,
    robust: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    connection_name: str | None = None,
) -> AbstractConnection:
    """Connect to ``settings.url``, retrying every ``reconnect_interval_s`` for ``timeout_s``.

    A refused login or an untrusted TLS certificate is not retried: waiting
    does not fix them.
    Raises :class:`~amqp_worker.errors.BrokerUnavailable` with a one-line
    reason that never contains the password. ``robust`` connections reconnect
    by themselves later on (aio-pika's ``connect_robust``).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    properties: dict[str, Any] = {}
    if connection_name:
        properties["connection_name"] = connection_name
    connect = aio_pika.connect_robust if robust else aio_pika.connect
    extra: dict[str, Any] = {}
    if robust:
        extra["reconnect_interval"] = settings.reconnect_interval_s
    while True:
        remaining = deadline - loop.time()
        try:
            connection: AbstractConnection = await connect(
                settings.url.get_secret_value(),
                ssl_context=ssl_context,
                client_properties=properties,
                timeout=max(0.1, min(remaining, ATTEMPT_TIMEOUT_S)),
                heartbeat=settings.heartbeat_s,
                **extra,
            )
            return connection
        except amqp_errors.ProbableAuthenticationError as exc:
            reason = scrub_url(settings, f"{type(exc).__name__}: {exc}")
            raise BrokerUnavailable(
                f"{settings.broker} refused the login ({reason}); check the user, "
                "password and vhost permissions"
            ) from None
        except (OSError, TimeoutError, amqp_errors.AMQPError) as exc:
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                # Like a wrong password, an untrusted certificate does not fix itself.
                raise BrokerUnavailable(
                    f"cannot connect to {settings.broker}: its TLS certificate is not trusted "
                    f"({untrusted.verify_message or untrusted}); pass ssl_context= or "
                    "?cafile= with its CA"
                ) from None
            last: BaseException = exc
        if loop.time() + settings.reconnect_interval_s > deadline:
            break
        await asyncio.sleep(settings.reconnect_interval_s)
    reason = scrub_url(settings, f"{type(last).__name__}: {last}")
    raise BrokerUnavailable(f"cannot connect to {settings.broker} within {timeout_s:g}s ({reason})")


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate error behind ``exc`` (aiormq wraps it), if there is one."""
    seen: BaseException | None = exc
    for _ in range(5):  # a short chain; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
