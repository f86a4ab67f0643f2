"""Every error amqp-worker raises on purpose.

All of them derive from one base class, so ``except AmqpWorkerError`` catches
everything the library raises deliberately. Where a builtin exception fits the
meaning too (a bad argument is a ``ValueError``, a missing handler a
``LookupError``), the class also derives from it, so code that already catches
builtins keeps working.

The tree::

    AmqpWorkerError
    ├── InvalidHandler            (ValueError)   register() got a bad name or callable
    ├── HandlerAlreadyRegistered  (ValueError)   register() got a name already taken
    ├── HandlerNotRegistered      (LookupError)  no handler is registered under a name
    ├── InvalidArgs               (ValueError)   args failed the handler's model
    ├── Retry                                    a handler asks to be retried after a delay
    ├── PermanentError                           a handler says: do not retry, park this job
    │   ├── InvalidResult         (ValueError)   a result that is not JSON, or too large
    │   ├── JobExpired                           a job started after its deadline; never run
    │   └── JobCancelled                         a job was cancelled (worker.cancel)
    ├── JobTimeout                (TimeoutError) a handler ran past its timeout_s
    ├── JobCrashed                               a job kept killing the worker running it
    ├── JobTooLarge               (ValueError)   a job's JSON is over max_message_bytes (or the broker's max)
    ├── FailedJobNotFound         (LookupError)  no failed job has this id
    ├── ConfigurationError        (ValueError)   a setting or URL is unusable
    ├── InvalidSchedule           (ValueError)   schedule() got a bad name, cron, interval or zone
    ├── InvalidWorkflow           (ValueError)   a chain or group is unusable (a cycle, too big)
    │   └── GroupExists                          a group with this id is still open
    ├── JobFailed                                the job whose result was awaited was parked
    ├── DuplicateJob                             a unique job with this key is still live
    ├── InvalidControl            (ValueError)   a fleet control asked for what it cannot do
    ├── ResultTimeout             (TimeoutError) no result within timeout_s
    └── BrokerError                              RabbitMQ did not do what was asked
        ├── BrokerUnavailable     (ConnectionError)  no connection within the deadline
        ├── AccessRefused         (PermissionError)  the broker refused a permission (403)
        ├── TopologyConflict                     a queue exists with other arguments
        └── PublishError                         a job was not confirmed as enqueued
            ├── PublishNacked                    the broker refused the message
            └── PublishReturned                  no queue was bound for the message

``Job(...)`` itself raises :class:`pydantic.ValidationError` (a ``ValueError``),
which names the offending field.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "AccessRefused",
    "AmqpWorkerError",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "DuplicateJob",
    "FailedJobNotFound",
    "GroupExists",
    "HandlerAlreadyRegistered",
    "HandlerNotRegistered",
    "InvalidArgs",
    "InvalidControl",
    "InvalidHandler",
    "InvalidResult",
    "InvalidSchedule",
    "InvalidWorkflow",
    "JobCancelled",
    "JobCrashed",
    "JobExpired",
    "JobFailed",
    "JobTimeout",
    "JobTooLarge",
    "PermanentError",
    "PublishError",
    "PublishNacked",
    "PublishReturned",
    "ResultTimeout",
    "Retry",
    "TopologyConflict",
]


def describe_validation_error(exc: ValidationError, whole: str = "value") -> str:
    """Pydantic's errors as one line, ``field.path: message; ...`` (``whole`` names the root)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or whole}: {err['msg']}"
        for err in exc.errors()
    )


class AmqpWorkerError(Exception):
    """Base class of every error amqp-worker raises on purpose."""


class InvalidHandler(AmqpWorkerError, ValueError):
    """A handler name or callable given to ``register`` is unusable."""


class HandlerAlreadyRegistered(AmqpWorkerError, ValueError):
    """A handler is already registered under this name on this worker."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a handler is already registered under {name!r}")
        self.name = name


class HandlerNotRegistered(AmqpWorkerError, LookupError):
    """No handler is registered under this name on this worker."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no handler is registered under {name!r}")
        self.name = name


class InvalidArgs(AmqpWorkerError, ValueError):
    """A job's args failed validation into its handler's args model; never retried."""


class Retry(AmqpWorkerError):
    """Raised by a handler to be retried, after ``delay_s`` seconds if given.

    It counts as an attempt: once ``max_retries`` are used up, the job is
    parked like any other failure.
    """

    def __init__(self, reason: str = "", *, delay_s: float | None = None) -> None:
        super().__init__(reason or "retry requested by the handler")
        if delay_s is not None and not (delay_s >= 0 and delay_s != float("inf")):
            raise ValueError(f"delay_s must be a finite number >= 0, got {delay_s!r}")
        self.delay_s = delay_s


class PermanentError(AmqpWorkerError):
    """Raised by a handler when retrying cannot help: the job is parked at once."""


class JobTimeout(AmqpWorkerError, TimeoutError):
    """A handler ran longer than its ``timeout_s``; retried like any other failure."""


class JobCrashed(AmqpWorkerError):
    """A job was handed out ``max_deliveries`` times and never finished: its handler kept
    killing the worker process (``os._exit``, a segfault, the OOM killer). Parked, not retried.
    """


class JobTooLarge(AmqpWorkerError, ValueError):
    """A job's JSON body is larger than ``max_message_bytes``, or than the broker's
    ``max_message_size`` (16 MiB by default on RabbitMQ 4.x); nothing was enqueued."""


class FailedJobNotFound(AmqpWorkerError, LookupError):
    """No failed job has this id (in the queues that were searched)."""


class InvalidWorkflow(AmqpWorkerError, ValueError):
    """A chain or group is unusable: a repeated id (a cycle), a step that is itself a
    workflow, no steps, too many members; the message says which."""


class GroupExists(InvalidWorkflow):
    """A group with this id is still open on the broker (members running or parked)."""


class InvalidResult(PermanentError, ValueError):
    """A handler registered with ``result=True`` (or a chain step whose result is passed
    on) returned a value that is not JSON, or whose JSON is over ``max_message_bytes``.
    The job is parked with reason ``invalid_result``; retrying cannot help."""


class JobExpired(PermanentError):
    """A job was not started before its deadline (``Job.expires_at``, or its handler's
    ``max_age_s``). It is parked with reason ``expired``; its handler never ran."""


class JobCancelled(PermanentError):
    """A job was cancelled (``worker.cancel``, ``amqp-worker cancel``). A queued or
    delayed one is parked with reason ``cancelled`` and never runs; a running one is
    told (docs/controls.md)."""


class InvalidControl(AmqpWorkerError, ValueError):
    """A fleet control was asked for what it cannot do: a ``partition_key`` on a worker
    without ``partitions``, or on a delayed job; the message says which. Nothing was
    enqueued."""


class DuplicateJob(AmqpWorkerError):
    """A job with the same ``unique_key`` is still queued, delayed or running (or its
    window has not passed); nothing was enqueued. ``key`` is the unique key."""

    def __init__(self, key: str, message: str | None = None) -> None:
        self.key = key
        super().__init__(message or f"a job with unique_key {key!r} is still live")


class JobFailed(AmqpWorkerError):
    """The job whose result was awaited was parked; ``result`` is its failure record."""

    def __init__(self, result: Any) -> None:
        self.result = result
        super().__init__(
            f"job {result.job_id} failed ({result.reason}): {result.error or 'no error text'}"
        )


class ResultTimeout(AmqpWorkerError, TimeoutError):
    """No result of the job arrived within ``timeout_s`` (not finished yet, not stored,
    or expired after ``result_ttl_s``)."""


class ConfigurationError(AmqpWorkerError, ValueError):
    """A setting, URL or option is unusable; the message says which and why."""


class InvalidSchedule(AmqpWorkerError, ValueError):
    """``schedule()`` got a bad name, cron expression, interval, zone or ``missed`` value."""


class BrokerError(AmqpWorkerError):
    """RabbitMQ could not be reached or refused what was asked of it."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """No broker connection could be had within the configured deadline."""


class TopologyConflict(BrokerError):
    """A queue or exchange already exists on the broker with different arguments."""

    @classmethod
    def from_reply(
        cls, kind: str, name: str, exc: BaseException, wanted: dict[str, Any]
    ) -> TopologyConflict:
        """The error for the broker's 406 reply ``exc`` to declaring ``name`` with ``wanted``."""
        reply = str(exc.args[0]) if exc.args else str(exc)
        match = re.search(r"inequivalent arg '([^']+)'", reply)
        argument = f"argument {match.group(1)!r}" if match else "its arguments"
        return cls(
            f"{kind} {name!r} already exists on the broker with a different {argument}: "
            f"{reply}. amqp-worker declares it with {wanted or 'no arguments'}. "
            "Use a different name or queue_prefix, match queue_type to the existing queue, "
            "or move its messages away and delete it so amqp-worker can declare it."
        )


class AccessRefused(BrokerError, PermissionError):
    """The broker refused an operation for lack of permission (ACCESS_REFUSED, 403)."""

    @classmethod
    def from_reply(cls, action: str, exc: BaseException) -> AccessRefused:
        """The error for the broker's 403 reply ``exc`` to ``action``."""
        reply = str(exc.args[0]) if exc.args else str(exc)
        return cls(
            f"the broker refused to {action}: {reply}. Grant the user the permission "
            "(configure to declare, write to publish or bind a queue, read to consume or "
            "to bind from an exchange); docs/security.md lists what amqp-worker needs."
        )


class PublishError(BrokerError):
    """A job was not confirmed by the broker, so it may not be enqueued.

    ``job_ids`` lists the jobs that were not confirmed (for ``perform_many``).
    """

    def __init__(self, message: str, job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.job_ids = job_ids


class PublishNacked(PublishError):
    """The broker answered the publish with a negative confirm (basic.nack)."""


class PublishReturned(PublishError):
    """The broker returned the message as unroutable: no queue is bound for it."""
