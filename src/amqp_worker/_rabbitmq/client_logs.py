"""aio-pika's and aiormq's own log records about a lost connection, turned down to DEBUG.

When a connection drops, aio-pika and aiormq log it many times over, at
ERROR and WARNING, often with a traceback: a close callback of every channel
("Callback <OneShotCallback ... RobustChannel._on_close> error: RuntimeError:
<Connection ...> closed"), the reader that exited, every reconnect attempt
that found the broker still away. A worker handles all of that itself, and
:class:`~amqp_worker._rabbitmq.failover.OutageLog` says it once: one WARNING when the
connection is lost, one INFO when it is back.

:class:`ReconnectNoise` is the filter that keeps the user's log to that. It
is installed on aio-pika's and aiormq's loggers while a worker runs
(:func:`install` at start, :func:`uninstall` at stop, counted, so several
workers share it). Only records recognised as the consequence of a lost
connection are changed: each known message, and only when the exception it
reports is one :func:`~amqp_worker._rabbitmq.connect.connection_lost` (or a failed
TCP connect) accounts for. They become DEBUG records, dropped unless that
logger is enabled for DEBUG. Any other record, including every unknown error
from these libraries, passes unchanged.
"""

from __future__ import annotations

import logging
import ssl
import threading

import aiormq.exceptions as amqp_errors

from .connect import connection_lost

__all__ = ["LOGGERS", "ReconnectNoise", "install", "installed", "recognised", "uninstall"]

#: The loggers that write the records this module recognises.
LOGGERS = ("aio_pika.tools", "aio_pika.robust_connection", "aiormq.connection")

#: (logger, format string) of each known record, and which of its arguments is the
#: exception; None means the exception is in the record's exc_info.
_KNOWN: dict[tuple[str, str], int | None] = {
    # A channel's close callback ran into the closed connection (aio-pika tools.py).
    ("aio_pika.tools", "Callback %r error: %s: %s"): 2,
    # The reader task ended with the connection (aiormq connection.py).
    ("aiormq.connection", "Cancelling cause reader exited abnormally"): None,
    # A reconnect attempt while the broker is still away (aiormq, aio-pika).
    ("aiormq.connection", "error when creating transport: %r"): 0,
    (
        "aio_pika.robust_connection",
        'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
    ): 1,
    (
        "aio_pika.robust_connection",
        "Reconnect attempt failed %s due to %s: %s. Retrying after %r seconds.",
    ): 2,
    ("aio_pika.robust_connection", "Failed to execute close callbacks for %s"): None,
}


def _reported_error(record: logging.LogRecord) -> BaseException | None:
    """The exception a known record reports, or None if the record is not a known one."""
    if not isinstance(record.msg, str) or (record.name, record.msg) not in _KNOWN:
        return None
    position = _KNOWN[(record.name, record.msg)]
    error: object
    if position is None:
        error = record.exc_info[1] if record.exc_info else None
    else:
        args = record.args if isinstance(record.args, tuple) else ()
        error = args[position] if len(args) > position else None
    return error if isinstance(error, BaseException) else None


def _lost_connection(error: BaseException) -> bool:
    """True if ``error`` is what a lost connection (or a broker still away) looks like.

    Not a refused login, a forbidden vhost, a protocol error the broker
    reported, or a TLS failure: those stay loud, a retry does not fix them.
    """
    if isinstance(error, ssl.SSLError):
        return False
    if isinstance(error, amqp_errors.AMQPConnectionError) and type(error) not in (
        amqp_errors.AMQPConnectionError,
        amqp_errors.ConnectionClosed,
    ):
        return False
    return connection_lost(error) or isinstance(error, OSError | TimeoutError)


def recognised(record: logging.LogRecord) -> bool:
    """True if ``record`` is a known aio-pika/aiormq record about a lost connection."""
    error = _reported_error(record)
    return error is not None and _lost_connection(error)


class ReconnectNoise(logging.Filter):
    """Turns the known lost-connection records of aio-pika and aiormq into DEBUG records.

    A recognised record is re-levelled to DEBUG, or dropped when its logger
    is not enabled for DEBUG (exactly as if it had been logged at DEBUG).
    Every other record passes unchanged: an unknown error is never hidden.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        try:
            if not recognised(record):
                return True
        except Exception:  # a filter must never break the caller's log call
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        return True


_FILTER = ReconnectNoise()
_lock = threading.Lock()
_users = 0


def install() -> None:
    """Put the filter on aio-pika's and aiormq's loggers (once, however many workers run)."""
    global _users
    with _lock:
        if _users == 0:
            for name in LOGGERS:
                logging.getLogger(name).addFilter(_FILTER)
        _users += 1


def uninstall() -> None:
    """Undo one :func:`install`; the last one takes the filter off again."""
    global _users
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0:
            for name in LOGGERS:
                logging.getLogger(name).removeFilter(_FILTER)


def installed() -> bool:
    """True while at least one worker has the filter installed."""
    return _users > 0
