"""What every command shares: exit codes, the connection options, errors, tables."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from amqp_worker.amqp import AMQPWorker
from amqp_worker.settings import AMQPSettings

__all__ = [
    "CLIError",
    "ExitCode",
    "Target",
    "connection_options",
    "queue_option",
    "render_table",
    "scrub",
]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """How ``amqp-worker`` exits; scripts and supervisors can rely on these."""

    OK = 0
    """Done; or the daemon stopped cleanly after SIGTERM/SIGINT."""
    FAILURE = 1
    """The command ran but did not succeed: an unknown job id, missing topology, a
    declined confirmation, a forced stop (second signal)."""
    CONFIG = 2
    """A bad option, argument, setting or URL."""
    IMPORT = 3
    """``run`` could not import its ``module:attr`` or it is not a worker."""
    CONNECTION = 4
    """The broker could not be reached."""


class CLIError(Exception):
    """An error the CLI reports as one line, with its exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.code = code


_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)
_secrets: set[str] = set()


def remember_secret(url: str) -> None:
    """Never print ``url`` or its password, whatever error message carries them."""
    _secrets.add(url)
    password = urlsplit(url).password
    if password:
        _secrets.add(password)


def scrub(text: str) -> str:
    """``text`` without credentials: userinfo of URLs and every remembered secret."""
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _CREDENTIALS.sub(r"\1***@", text)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command connects: ``--url``, ``--name`` and ``--queue-prefix`` (None: env)."""

    url: str | None
    name: str | None
    queue_prefix: str | None

    def options(self) -> dict[str, Any]:
        """The given values as :class:`~amqp_worker.AMQPWorker` keyword options."""
        options: dict[str, Any] = {}
        if self.name is not None:
            options["name"] = self.name
        if self.queue_prefix is not None:
            options["queue_prefix"] = self.queue_prefix
        return options

    def worker(self, queues: Sequence[str] = (), **options: Any) -> AMQPWorker:
        """An :class:`AMQPWorker` for these options; env fills in the rest.

        Raises :class:`~amqp_worker.ConfigurationError` for bad values.
        """
        if self.url is not None:
            remember_secret(self.url)
        if queues:
            options["queues"] = list(queues)
        worker = AMQPWorker(self.url, **self.options(), **options)
        remember_secret(worker.settings.url.get_secret_value())
        return worker

    def settings(self, queues: Sequence[str] = ()) -> AMQPSettings:
        """The settings these options and the environment give."""
        return self.worker(queues).settings


def connection_options(func: F) -> F:
    """Add ``--url``, ``--name`` and ``--queue-prefix``; pass them on as ``target``."""

    @click.option(
        "--url",
        metavar="URL",
        help="amqp:// or amqps:// URL; the path is the vhost. [env: AMQP_WORKER_URL; "
        "prefer the env var: options show in `ps`]",
    )
    @click.option(
        "--name",
        metavar="NAME",
        help="Namespace of the exchanges and internal queues. [env: AMQP_WORKER_NAME]",
    )
    @click.option(
        "--queue-prefix",
        metavar="PREFIX",
        help="Prepended to every queue name. [env: AMQP_WORKER_QUEUE_PREFIX]",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, url: str | None, name: str | None, queue_prefix: str | None, **kwargs: Any
    ) -> Any:
        return func(*args, target=Target(url, name, queue_prefix), **kwargs)

    return wrapper  # type: ignore[return-value]


def queue_option(
    help_text: str, default: str = "AMQP_WORKER_QUEUES, or 'default'"
) -> Callable[[F], F]:
    """A repeatable ``-q/--queue`` option, passed on as ``queues`` (a tuple, maybe empty)."""
    return click.option(
        "-q",
        "--queue",
        "queues",
        multiple=True,
        metavar="QUEUE",
        help=f"{help_text} Repeat for more. [default: {default}]",
    )


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def shorten(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."
