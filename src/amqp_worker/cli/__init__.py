"""The ``amqp-worker`` command: run workers, enqueue jobs, inspect queues, handle failed jobs.

Every error is one line on stderr, never a traceback or a credential, and the
exit code says what kind it was (:class:`ExitCode`, documented in docs/cli.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import aiormq.exceptions as amqp_errors
import click
from pydantic import ValidationError

from amqp_worker import __version__
from amqp_worker.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    FailedJobNotFound,
)

from . import logs
from .asyncapi import asyncapi
from .cancel import cancel
from .check import check
from .child import child
from .common import CLIError, ExitCode, Secrets
from .dashboard import dashboard
from .enqueue import enqueue
from .failed import failed
from .groups import groups
from .limits import limits
from .queues import queues
from .run import run
from .schedules import schedules

__all__ = ["ExitCode", "cli", "main", "run_cli"]

PROG = "amqp-worker"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    __version__, "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s"
)
def cli() -> None:
    """Background jobs on RabbitMQ: run workers, enqueue jobs, inspect queues and failed jobs.

    Settings come from options, then AMQP_WORKER_* environment variables
    (AMQP_WORKER_URL, AMQP_WORKER_NAME, AMQP_WORKER_QUEUES=a,b, ...), then defaults.

    Exit codes: 0 ok, 1 failure (e.g. not found), 2 configuration or usage
    error, 3 import error (run), 4 broker unreachable.
    """


cli.add_command(run)
cli.add_command(enqueue)
cli.add_command(queues)
cli.add_command(check)
cli.add_command(failed)
cli.add_command(schedules)
cli.add_command(groups)
cli.add_command(cancel)
cli.add_command(limits)
cli.add_command(dashboard)
cli.add_command(asyncapi)
cli.add_command(child)


def _report(message: str, secrets: Secrets, prefix: str = PROG) -> None:
    """Print the one error line, without any password ``secrets`` knows or any URL holds."""
    clean = secrets.scrub(message)
    if logs.log_format() == "json":
        logs.emit(clean, level=logging.ERROR)
    else:
        click.echo(f"{prefix}: error: {clean}", err=True)


def _classify(exc: Exception) -> ExitCode | None:
    """The exit code of an error the CLI reports as one line; None for a bug (traceback)."""
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, ConfigurationError | ValidationError):
        return ExitCode.CONFIG
    if isinstance(exc, BrokerUnavailable | amqp_errors.AMQPConnectionError | ConnectionError):
        return ExitCode.CONNECTION
    if isinstance(exc, FailedJobNotFound | BrokerError | amqp_errors.AMQPError):
        return ExitCode.FAILURE
    return None


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    logs.quiet_dial_errors()
    # What this run must never print, from what it was given; the commands add
    # the URLs of the workers they build (click hands it to them as ctx.obj).
    secrets = Secrets.given(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        result = cli.main(args=argv, prog_name=PROG, standalone_mode=False, obj=secrets)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        prefix = exc.ctx.command_path if exc.ctx is not None else PROG
        _report(f"{exc.format_message()}{hint}", secrets, prefix)
        return ExitCode.CONFIG
    except click.exceptions.Abort:
        click.echo(f"{PROG}: aborted", err=True)
        return ExitCode.FAILURE
    except click.ClickException as exc:
        _report(exc.format_message(), secrets)
        return exc.exit_code
    except Exception as exc:
        code = _classify(exc)
        if code is None:
            raise
        message = str(exc) or type(exc).__name__
        if isinstance(exc, amqp_errors.AMQPError | ConnectionError) and not isinstance(
            exc, BrokerError
        ):
            message = f"{type(exc).__name__}: {message}"
        _report(message, secrets)
        return code
    return int(result) if isinstance(result, int) else ExitCode.OK


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``amqp-worker`` console script."""
    raise SystemExit(run_cli(argv))
