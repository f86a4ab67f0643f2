"""What every command shares: exit codes, the connection options, errors, tables."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

import click

from amqp_worker._rabbitmq.redact import redact, url_secrets
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker._rabbitmq.worker import AMQPWorker

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CLIError",
    "ExitCode",
    "Secrets",
    "Target",
    "connection_options",
    "daemon_connection_options",
    "queue_option",
    "render_table",
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


#: How long a one-shot command (everything but ``run``) waits for the broker by default.
DEFAULT_TIMEOUT_S = 5.0

#: Where a URL may come from besides the command line.
URL_ENV = "AMQP_WORKER_URL"


class Secrets:
    """The passwords one run of the CLI must never print, learnt from what it was given.

    :func:`~amqp_worker.cli.run_cli` makes one per run, from the command line
    and ``AMQP_WORKER_URL``, and hands it to the commands as the click
    context's ``obj``; :class:`Target` adds the URL of each worker it builds,
    ``run`` the URL of the worker it loaded. Every error line goes through
    :meth:`scrub`. One object per run, passed explicitly: two runs in one
    process (tests, embedding) never share or leak secrets.
    """

    def __init__(self, urls: Iterable[str | None] = ()) -> None:
        self._known: set[str] = set()
        for url in urls:
            self.add(url)

    @classmethod
    def given(cls, argv: Sequence[str], environ: Mapping[str, str]) -> Secrets:
        """The secrets in ``argv`` (any argument holding a URL, ``--url=...`` too) and the env."""
        return cls([*(arg for arg in argv if "://" in arg), environ.get(URL_ENV)])

    def add(self, url: str | None) -> None:
        """Never print the password(s) of ``url`` (a URL or a comma-separated list; None: none)."""
        if url:
            self._known |= url_secrets(url)

    def scrub(self, text: str) -> str:
        """``text`` without any known password or the credentials of any URL."""
        return redact(text, self._known)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a command connects: ``--url``, ``--name``, ``--queue-prefix`` and ``--timeout``.

    None means "not given": the environment, then the defaults, decide.
    ``timeout_s`` becomes the worker's ``publish_timeout_s``, so it bounds
    connecting and each broker confirm; None (``run``) keeps the setting's.
    Each URL a worker is built with is added to ``secrets``.
    """

    url: str | None
    name: str | None
    queue_prefix: str | None
    timeout_s: float | None = None
    secrets: Secrets = field(default_factory=Secrets, compare=False, repr=False)

    def options(self) -> dict[str, Any]:
        """The given values as :class:`~amqp_worker.AMQPWorker` keyword options."""
        options: dict[str, Any] = {}
        if self.name is not None:
            options["name"] = self.name
        if self.queue_prefix is not None:
            options["queue_prefix"] = self.queue_prefix
        if self.timeout_s is not None:
            options["publish_timeout_s"] = self.timeout_s
        return options

    def worker(self, queues: Sequence[str] = (), **options: Any) -> AMQPWorker:
        """An :class:`AMQPWorker` for these options; env fills in the rest.

        Raises :class:`~amqp_worker.ConfigurationError` for bad values.
        """
        self.secrets.add(self.url)
        if queues:
            options["queues"] = list(queues)
        worker = AMQPWorker(self.url, **{**self.options(), **options})
        self.secrets.add(worker.settings.url.get_secret_value())
        return worker

    def settings(self, queues: Sequence[str] = ()) -> AMQPSettings:
        """The settings these options and the environment give."""
        return self.worker(queues).settings


def _connection_options(func: F, *, timeout: bool) -> F:
    """Add ``--url``, ``--name``, ``--queue-prefix`` (and ``--timeout``); pass on ``target``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        url: str | None,
        name: str | None,
        queue_prefix: str | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        # run_cli passes one Secrets per run as ctx.obj; a bare cli.main() gets a fresh one.
        secrets = click.get_current_context().ensure_object(Secrets)
        secrets.add(url)
        return func(*args, target=Target(url, name, queue_prefix, timeout, secrets), **kwargs)

    options = [
        click.option(
            "--url",
            metavar="URL",
            help="amqp:// or amqps:// URL; the path is the vhost. [env: AMQP_WORKER_URL; "
            "prefer the env var: options show in `ps`]",
        ),
        click.option(
            "--name",
            metavar="NAME",
            help="Namespace of the exchanges and internal queues. [env: AMQP_WORKER_NAME]",
        ),
        click.option(
            "--queue-prefix",
            metavar="PREFIX",
            help="Prepended to every queue name. [env: AMQP_WORKER_QUEUE_PREFIX]",
        ),
    ]
    if timeout:
        options.append(
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULT_TIMEOUT_S,
                show_default=True,
                metavar="SECONDS",
                help="Longest wait for the broker: to connect, and for each publish "
                "confirm. (AMQP_WORKER_PUBLISH_TIMEOUT_S is for `run` only.)",
            )
        )
    decorated: Callable[..., Any] = wrapper
    for option in reversed(options):  # so --help lists them in this order
        decorated = option(decorated)
    return decorated  # type: ignore[return-value]


def connection_options(func: F) -> F:
    """For one-shot commands: ``--url``, ``--name``, ``--queue-prefix``, ``--timeout``.

    The command gets them as ``target``, a :class:`Target`; ``--timeout``
    (default :data:`DEFAULT_TIMEOUT_S`) becomes the ``publish_timeout_s`` of
    the workers it builds, so an unreachable broker is reported within seconds.
    """
    return _connection_options(func, timeout=True)


def daemon_connection_options(func: F) -> F:
    """For ``run``: ``--url``, ``--name`` and ``--queue-prefix``, as ``target``; no ``--timeout``.

    A daemon keeps retrying for ``publish_timeout_s`` (the worker's setting).
    """
    return _connection_options(func, timeout=False)


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
