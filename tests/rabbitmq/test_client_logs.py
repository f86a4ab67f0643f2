"""The filter that turns aio-pika's and aiormq's lost-connection records down to DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import aiormq.exceptions as amqp_errors
import pytest
from aio_pika.exceptions import ChannelInvalidStateError

from amqp_worker._rabbitmq import client_logs

CALLBACK = "Callback %r error: %s: %s"
ATTEMPT = 'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.'
READER = "Cancelling cause reader exited abnormally"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)  # a handler without a level, as many users have
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def levels(self) -> list[str]:
        return [record.levelname for record in self.records]


@pytest.fixture
def kept() -> Iterator[Kept]:
    """A handler on every watched logger, which stands at WARNING, with the filter installed."""
    handler = Kept()
    loggers = [logging.getLogger(name) for name in client_logs.LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    client_logs.install()
    try:
        yield handler
    finally:
        client_logs.uninstall()
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def closed_connection() -> RuntimeError:
    return RuntimeError('<Connection: "amqp://u:******@127.0.0.1:5672/" at 0x7f> closed')


@pytest.mark.parametrize(
    "error",
    [
        closed_connection(),
        ChannelInvalidStateError("No active transport in channel"),
        amqp_errors.AMQPConnectionError("reset"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=["closed", "no-transport", "amqp-connection", "reset"],
)
def test_a_close_callback_failing_on_the_lost_connection_is_not_an_error(
    kept: Kept, error: BaseException
) -> None:
    logging.getLogger("aio_pika.tools").error(CALLBACK, "<OneShotCallback>", "E", error)
    assert kept.levels == []  # DEBUG, and DEBUG is off for that logger


def test_with_debug_on_the_record_is_kept_at_debug(kept: Kept) -> None:
    logging.getLogger("aio_pika.tools").setLevel(logging.DEBUG)
    logging.getLogger("aio_pika.tools").error(CALLBACK, "cb", "RuntimeError", closed_connection())
    assert kept.levels == ["DEBUG"]
    assert "closed" in kept.records[0].getMessage()


def test_the_reader_ending_with_the_connection_is_not_a_warning(kept: Kept) -> None:
    logger = logging.getLogger("aiormq.connection")
    logger.warning(READER, exc_info=amqp_errors.AMQPConnectionError("reset"))
    assert kept.levels == []


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug in a callback"),
        RuntimeError("something else entirely"),
        amqp_errors.ChannelPreconditionFailed("PRECONDITION_FAILED - unknown delivery tag 7"),
    ],
    ids=["bug", "other-runtime-error", "stale-delivery-tag"],
)
def test_any_other_callback_error_stays_an_error(kept: Kept, error: BaseException) -> None:
    logging.getLogger("aio_pika.tools").error(CALLBACK, "cb", type(error).__name__, error)
    assert kept.levels == ["ERROR"]


@pytest.mark.parametrize(
    "error",
    [
        amqp_errors.ProbableAuthenticationError("ACCESS_REFUSED"),
        amqp_errors.ConnectionNotAllowed("no access to this vhost"),
    ],
    ids=["login", "vhost"],
)
def test_a_reconnect_the_broker_refuses_stays_loud(kept: Kept, error: BaseException) -> None:
    logging.getLogger("aio_pika.robust_connection").warning(ATTEMPT, "conn", error, 1.0)
    assert kept.levels == ["WARNING"]


def test_a_reconnect_to_a_broker_still_away_is_not_a_warning(kept: Kept) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    logging.getLogger("aio_pika.robust_connection").warning(ATTEMPT, "conn", refused, 1.0)
    assert kept.levels == []


def test_unknown_messages_pass_unchanged(kept: Kept) -> None:
    logging.getLogger("aio_pika.tools").error("Something new: %s", closed_connection())
    logging.getLogger("aiormq.connection").warning(READER)  # no exc_info
    assert kept.levels == ["ERROR", "WARNING"]


@pytest.mark.parametrize(
    "args",
    [("too few",), ("cb", "X", "not an exception"), ({"a": 1},), None],
    ids=["short", "no-exception", "mapping", "none"],
)
def test_odd_arguments_pass_unchanged(args: object) -> None:
    record = logging.LogRecord("aio_pika.tools", logging.ERROR, "t.py", 1, CALLBACK, None, None)
    record.args = args  # type: ignore[assignment]
    assert client_logs.ReconnectNoise().filter(record)
    assert record.levelno == logging.ERROR


def test_other_loggers_are_left_alone(kept: Kept) -> None:
    other = logging.getLogger("aio_pika.queue")
    other.addHandler(kept)
    try:
        other.error(CALLBACK, "cb", "RuntimeError", closed_connection())
    finally:
        other.removeHandler(kept)
    assert kept.levels == ["ERROR"]


def test_install_is_counted() -> None:
    tools = logging.getLogger("aio_pika.tools")

    def filtered() -> bool:
        return any(isinstance(f, client_logs.ReconnectNoise) for f in tools.filters)

    assert not client_logs.installed()
    client_logs.install()
    client_logs.install()  # a second worker
    client_logs.uninstall()
    assert client_logs.installed()
    assert filtered()
    client_logs.uninstall()
    assert not client_logs.installed()
    assert not filtered()
    client_logs.uninstall()  # one too many: harmless
    client_logs.install()
    assert filtered()
    client_logs.uninstall()
    assert not filtered()
