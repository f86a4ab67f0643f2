"""What ``amqp-worker run --processes`` and its children share, as pure values and functions.

- :class:`ChildSpec`: what a child runs, handed to it in its environment as JSON;
- the status lines a child writes to its supervisor (:func:`status_line`, :func:`read_status`);
- :func:`restart_delay_s`: the backoff before a child that died is started again;
- :func:`describe_exit`: a child's exit status in words;
- the option types: a process count or ``auto``, a memory size.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import click

__all__ = [
    "CHILD_SPEC_ENV",
    "ChildSpec",
    "MemorySize",
    "ProcessCount",
    "cpu_count",
    "describe_exit",
    "read_status",
    "restart_delay_s",
    "status_line",
]

#: The environment variable a child finds its :class:`ChildSpec` in. No ``AMQP_WORKER_``
#: prefix: it is not a setting, and settings must not see it.
CHILD_SPEC_ENV = "_AMQP_WORKER_CHILD"

if TYPE_CHECKING:
    _IntParam = click.ParamType[int]
else:  # click < 8.2 has no generic ParamType; the dependency admits 8.1
    _IntParam = click.ParamType

#: The first restart of a child that died waits this long; each further death in a row doubles it.
RESTART_BASE_S = 0.5
#: The longest wait before a restart.
RESTART_MAX_S = 30.0
#: A child that ran this long before dying starts its slot's count of deaths in a row afresh.
STABLE_AFTER_S = 30.0

#: The longest status line a supervisor reads; a child writes well under 200 bytes.
MAX_STATUS_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What one child process runs: the worker, the overrides ``run`` applied, its limits.

    ``overrides`` are the keyword options ``run`` rebuilt the worker with
    (a URL among them), so a child's worker is the supervisor's exactly.
    """

    target: str
    index: int
    status_fd: int
    shutdown_timeout_s: float
    log_level: str
    log_format: str
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: bool = False
    max_jobs: int | None = None
    max_memory_bytes: int | None = None

    def to_env(self) -> str:
        """This spec as the value of :data:`CHILD_SPEC_ENV`."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_env(cls, value: str) -> ChildSpec:
        """The spec :meth:`to_env` wrote; ValueError if ``value`` is not one."""
        try:
            return cls(**json.loads(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{CHILD_SPEC_ENV} does not hold a child spec: {exc}") from None


def status_line(event: str, **fields: Any) -> bytes:
    """One status line a child writes to its supervisor: ``{"event": ..., ...}``."""
    return json.dumps({"event": event, **fields}, separators=(",", ":")).encode() + b"\n"


def read_status(line: bytes) -> dict[str, Any] | None:
    """The status in ``line``; None for anything that is not one (it is ignored)."""
    try:
        status = json.loads(line)
    except ValueError:
        return None
    if not isinstance(status, dict) or not isinstance(status.get("event"), str):
        return None
    return status


def restart_delay_s(deaths_in_a_row: int) -> float:
    """How long to wait before starting a child again after its slot's ``deaths_in_a_row``-th death.

    0.5 s after the first, doubling, at most :data:`RESTART_MAX_S`: a handler
    that kills its process at once cannot make the supervisor spin.
    """
    if deaths_in_a_row <= 0:
        return 0.0
    delay_s: float = RESTART_BASE_S * 2.0 ** min(deaths_in_a_row - 1, 16)
    return min(delay_s, RESTART_MAX_S)


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``, for a subprocess return code."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ProcessCount(_IntParam):
    """A number of processes, at least 1, or ``auto``: one per core this process may use."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            count = value
        elif str(value).strip().lower() == "auto":
            return cpu_count()
        else:
            try:
                count = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number or 'auto'", param, ctx)
        if count < 1:
            self.fail(f"{count} is not at least 1", param, ctx)
        return count


_UNITS = {
    "": 2**20,  # a bare number is MiB
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 2**10,
    "m": 2**20,
    "mb": 1000**2,
    "mib": 2**20,
    "g": 2**30,
    "gb": 1000**3,
    "gib": 2**30,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


class MemorySize(_IntParam):
    """A memory size: ``512MiB``, ``1.5GiB``, ``800MB``; a bare number is MiB. In bytes."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            self.fail(
                f"{value!r} is not a size (e.g. 512MiB, 1GiB, 800MB; a bare number is MiB)",
                param,
                ctx,
            )
        size = int(float(match.group(1)) * _UNITS[unit])
        if size < 2**20:
            self.fail(f"{value!r} is under 1 MiB", param, ctx)
        return size
