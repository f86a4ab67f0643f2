"""Find the worker ``amqp-worker run module:attr`` runs, and apply the command line to it.

``run`` and each of its child processes (``--processes``) load it the same way: :func:`prepare`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from typing import Any

from amqp_worker._memory.worker import SimpleWorker
from amqp_worker._rabbitmq.worker import AMQPWorker
from amqp_worker.errors import ConfigurationError

from .common import CLIError, ExitCode, Target

__all__ = ["AnyWorker", "load_amqp_worker", "load_worker", "prepare", "rebuilt"]

AnyWorker = AMQPWorker | SimpleWorker

#: run's options that set an AMQPWorker setting, by setting name.
_OPTION_NAMES = {
    "url": "--url",
    "name": "--name",
    "queue_prefix": "--queue-prefix",
    "queues": "--queue",
    "prefetch": "--prefetch",
}


def _where(exc: BaseException) -> str:
    """`` (file:line)`` of the innermost frame that raised ``exc``, or nothing."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    try:
        filename = os.path.relpath(last.filename)
    except ValueError:  # pragma: no cover - another drive on Windows
        filename = last.filename
    return f" ({filename}:{last.lineno})"


def _import(module_name: str) -> Any:
    # Like `python -m`: modules in the current directory are importable.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ConfigurationError:
        raise  # a bad AMQP_WORKER_* setting: a configuration error, not an import error
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
            raise CLIError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(looked in {cwd} and the installed packages)",
                ExitCode.IMPORT,
            ) from None
        raise CLIError(
            f"importing {module_name!r} failed: ModuleNotFoundError: {exc}{_where(exc)}",
            ExitCode.IMPORT,
        ) from None
    except Exception as exc:
        raise CLIError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}",
            ExitCode.IMPORT,
        ) from None


def load_worker(spec: str) -> AnyWorker:
    """The worker ``module:attr`` names: a worker instance, or a zero-argument factory of one."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CLIError(
            f"expected module:attr (e.g. myapp.jobs:worker), got {spec!r}", ExitCode.CONFIG
        )
    found: Any = _import(module_name)
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CLIError(
                f"module {module_name!r} has no attribute {attr!r}", ExitCode.IMPORT
            ) from None
    if isinstance(found, AnyWorker):
        return found
    if not callable(found):
        raise CLIError(
            f"{spec} is not an AMQPWorker, a SimpleWorker or a zero-argument factory "
            f"of one (got {type(found).__name__})",
            ExitCode.IMPORT,
        )
    try:
        inspect.signature(found).bind()
    except TypeError:
        raise CLIError(
            f"{spec} needs arguments; give a worker or a zero-argument factory", ExitCode.IMPORT
        ) from None
    except ValueError:  # pragma: no cover - no signature (some builtins): just try it
        pass
    try:
        made = found()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise CLIError(
            f"{spec}() failed: {type(exc).__name__}: {exc}{_where(exc)}", ExitCode.IMPORT
        ) from None
    if not isinstance(made, AnyWorker):
        raise CLIError(
            f"{spec}() did not return an AMQPWorker or a SimpleWorker (got {type(made).__name__})",
            ExitCode.IMPORT,
        )
    return made


def load_amqp_worker(spec: str, needs: str) -> AMQPWorker:
    """:func:`load_worker`, which must give an AMQPWorker: ``needs`` says why (a CONFIG error)."""
    worker = load_worker(spec)
    if not isinstance(worker, AMQPWorker):
        raise CLIError(f"{spec} is a {type(worker).__name__}: {needs}", ExitCode.CONFIG)
    return worker


def rebuilt(worker: AnyWorker, **overrides: Any) -> AnyWorker:
    """``worker`` with the command line's ``overrides`` applied (itself if there are none).

    Raises :class:`~amqp_worker.ConfigurationError` for options the worker
    does not take or values it rejects; see :meth:`AMQPWorker.with_options`.
    """
    return worker.with_options(**overrides) if overrides else worker


def prepare(
    target_spec: str, target: Target, overrides: dict[str, Any]
) -> tuple[AnyWorker, dict[str, Any]]:
    """The worker ``target_spec`` names with ``overrides`` applied, and the overrides used.

    None values are "not given" and dropped. Raises :class:`CLIError` for
    AMQP-only options on a SimpleWorker, :class:`~amqp_worker.ConfigurationError`
    for values the worker rejects.
    """
    worker = load_worker(target_spec)
    if isinstance(worker, AMQPWorker):  # its URL came from its module, not from us
        target.secrets.add(worker.settings.url.get_secret_value())
    given = {key: value for key, value in overrides.items() if value is not None}
    amqp_only = [key for key in given if key in _OPTION_NAMES]
    if not isinstance(worker, AMQPWorker) and amqp_only:
        names = ", ".join(_OPTION_NAMES[key] for key in amqp_only)
        raise CLIError(
            f"{names} only apply to an AMQPWorker; {target_spec} is a SimpleWorker",
            ExitCode.CONFIG,
        )
    worker = rebuilt(worker, **given)
    if isinstance(worker, AMQPWorker):
        target.secrets.add(worker.settings.url.get_secret_value())
    return worker, given
