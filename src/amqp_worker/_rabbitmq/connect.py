"""Dialling RabbitMQ: bounded retries, one typed error, no credentials in messages."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Any

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractConnection

from amqp_worker.errors import BrokerUnavailable

from .failover import FailoverConnection, NodeRing
from .redact import redact, url_secrets
from .settings import AMQPSettings

__all__ = ["connection_lost", "dial"]

#: Errors that mean "the channel or connection went away", not "the broker said no".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ConnectionClosed,
    ConnectionError,
)

#: What aio-pika and aiormq say, with a bare RuntimeError, when the connection is gone:
#: "Connection was not opened", "<Connection ...> closed", "Can't initialize closed channel".
_LOST_MESSAGE = re.compile(
    r"^Connection (was not opened|is not ready)|Connection.*\bclosed$|closed channel",
    re.IGNORECASE,
)


def connection_lost(exc: BaseException) -> bool:
    """True if ``exc`` means the channel or connection went away (so a retry may work).

    aio-pika and aiormq report some of these as a bare ``RuntimeError``
    ("Connection was not opened", "<Connection> closed"); those count only by
    their message, so a ``RuntimeError`` from a bug surfaces at once instead
    of being retried as an outage.
    """
    if isinstance(exc, _CONNECTION_ERRORS):
        return True
    return type(exc) is RuntimeError and _LOST_MESSAGE.search(str(exc)) is not None


#: The longest one connection attempt may take, so a hung TCP connect is retried.
ATTEMPT_TIMEOUT_S = 10.0


def _redacted(settings: AMQPSettings, text: str) -> str:
    """``text`` without the password of ``settings.url`` (or of any URL), for messages."""
    return redact(text, url_secrets(settings.url.get_secret_value()))


async def dial(
    settings: AMQPSettings,
    timeout_s: float,
    *,
    ring: NodeRing | None = None,
    robust: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    connection_name: str | None = None,
) -> AbstractConnection:
    """Connect to a node of ``settings.url``, retrying every ``reconnect_interval_s`` for ``timeout_s``.

    Each round tries every node of ``ring`` (default: the settings' URLs in
    their given order) once, starting with its current one, and waits only
    between rounds: a dead node never delays the next one. The node that
    answered becomes the ring's current one. A refused login, a missing or
    forbidden vhost and a TLS certificate that fails verification are not
    retried: waiting does not fix them. Raises
    :class:`~amqp_worker.errors.BrokerUnavailable` with a one-line reason that
    never contains the password. ``robust`` connections reconnect by
    themselves later on, moving to the next node of the ring
    (:class:`~amqp_worker._rabbitmq.failover.FailoverConnection`).
    """
    ring = ring or NodeRing(settings.urls, shuffle=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    properties: dict[str, Any] = {}
    if connection_name:
        properties["connection_name"] = connection_name
    extra: dict[str, Any] = {}
    if robust:
        extra["reconnect_interval"] = settings.reconnect_interval_s
    made: list[AbstractConnection] = []  # the connection objects of the current attempt

    def factory(*args: Any, **kwargs: Any) -> AbstractConnection:
        if robust:
            made.append(FailoverConnection(*args, ring=ring, **kwargs))
        else:
            made.append(aio_pika.Connection(*args, **kwargs))
        return made[-1]

    while True:
        for url in ring.round():
            remaining = deadline - loop.time()
            made.clear()
            try:
                # aio_pika.connect and connect_robust differ only in the connection
                # class; ours records the object so a failed attempt can close it.
                connection: AbstractConnection = await aio_pika.connect(
                    url,
                    ssl_context=ssl_context,
                    client_properties=properties,
                    timeout=max(0.1, min(remaining, ATTEMPT_TIMEOUT_S)),
                    heartbeat=settings.heartbeat_s,
                    connection_class=factory,
                    **extra,
                )
                ring.use(url)
                return connection
            except BaseException as exc:
                # A connection that failed (or was cancelled) halfway may have started
                # reconnecting by itself: close it, or it retries forever in the background.
                for half_made in made:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(half_made.close())
                final = _final_error(settings, exc)
                if final is exc:
                    raise
                if final is not None:
                    raise final from None
                last: BaseException = exc
            if loop.time() >= deadline:
                break
        if loop.time() + settings.reconnect_interval_s > deadline:
            break
        await asyncio.sleep(settings.reconnect_interval_s)
    reason = _redacted(settings, f"{type(last).__name__}: {last}")
    raise BrokerUnavailable(f"cannot connect to {settings.broker} within {timeout_s:g}s ({reason})")


def _final_error(settings: AMQPSettings, exc: BaseException) -> BaseException | None:
    """What ends the attempts after ``exc``: ``exc`` itself, a clearer error, or None to retry."""
    if not isinstance(exc, OSError | TimeoutError | amqp_errors.AMQPError):
        return exc  # cancelled, or a bug: not a broker failure
    if isinstance(exc, amqp_errors.ProbableAuthenticationError):
        reason = _redacted(settings, f"{type(exc).__name__}: {exc}")
        return BrokerUnavailable(
            f"{settings.broker} refused the login ({reason}); check the user, "
            "password and vhost permissions"
        )
    # RabbitMQ answers the vhost open with connection.close (530) when the vhost is
    # missing or forbidden; aiormq reports that as an unexpected frame.
    if isinstance(exc, amqp_errors.ConnectionNotAllowed) or (
        isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.Close" in str(exc)
    ):
        return BrokerUnavailable(
            f"{settings.broker} refused the vhost: it does not exist, or this user has "
            "no permission on it"
        )
    untrusted = _certificate_error(exc)
    if untrusted is not None:
        # Like a wrong password, a certificate that fails verification does not fix itself.
        return BrokerUnavailable(
            f"cannot connect to {settings.broker}: its TLS certificate failed "
            f"verification ({untrusted.verify_message or untrusted}); trust its CA "
            "with ssl_context= or ?cafile=, and connect by a name the certificate holds"
        )
    return None


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
