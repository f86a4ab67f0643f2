"""A broker user with a password nobody else uses, and a watch for that password in any output.

The fault, blocking, hostile-payload and soak runs connect as this user. Every
log record (of every logger, at every level, with its traceback), everything
written to stdout/stderr, and every ``repr``/``str``/exception a test hands to
:meth:`LeakWatch.see` is kept and searched for the password when the test ends.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from tests.harness.brokertools import BROKER_URL, rabbitmqctl


@dataclass(frozen=True)
class SecretUser:
    """A RabbitMQ user on the shared broker's ``/`` vhost with a unique password."""

    name: str
    password: str

    def url(self, host: str = "127.0.0.1", port: int | None = None) -> str:
        """The test broker's URL with this user's credentials (and another port, for a proxy)."""
        parts = urlsplit(BROKER_URL)
        netloc = f"{self.name}:{self.password}@{host}:{port or parts.port or 5672}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    @classmethod
    def create(cls) -> SecretUser:
        token = uuid.uuid4().hex
        user = cls(name=f"awtest-{token[:8]}", password=f"pw-{token}-Zq9")
        rabbitmqctl("add_user", user.name, user.password)
        rabbitmqctl("set_permissions", "-p", "/", user.name, ".*", ".*", ".*")
        return user

    def delete(self) -> None:
        rabbitmqctl("delete_user", self.name)


class _Keep(logging.Handler):
    def __init__(self, texts: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.texts = texts

    def emit(self, record: logging.LogRecord) -> None:
        # The message with its arguments, and the traceback with every frame's text.
        self.texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            self.texts.append("".join(traceback.format_exception(record.exc_info[1])))


@dataclass
class LeakWatch:
    """Everything a run showed anyone; :meth:`check` fails if the password is in any of it."""

    password: str
    texts: list[str] = field(default_factory=list)

    def see(self, *things: object) -> None:
        """Keep ``repr`` and ``str`` of each thing (a worker, settings, an exception...)."""
        for thing in things:
            self.texts.append(repr(thing))
            self.texts.append(str(thing))
            if isinstance(thing, BaseException):
                self.texts.append("".join(traceback.format_exception(thing)))

    def check(self) -> None:
        leaked = [text for text in self.texts if self.password in text]
        assert not leaked, f"the password appeared in {len(leaked)} outputs, e.g. {leaked[0]!r}"

    def start(self, level: int = logging.DEBUG) -> _Keep:
        handler = _Keep(self.texts)
        root = logging.getLogger()
        root.addHandler(handler)
        # Down to DEBUG by default: a record that reaches no handler here would still
        # reach a user's handler in production.
        self._old_level = root.level
        root.setLevel(level)
        return handler

    def stop(self, handler: _Keep) -> None:
        root = logging.getLogger()
        root.removeHandler(handler)
        root.setLevel(self._old_level)
