"""amqp-worker: background jobs on RabbitMQ with Buffalo's small Worker interface.

Start with :class:`SimpleWorker` (in process, no broker) and switch to
:class:`AMQPWorker` for durable, confirmed jobs; both follow :class:`Worker`.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._core.failures import AttemptRecord, FailedJob, FailedJobsResult, FailureReason
from ._core.handlers import Handler, HandlerSpec
from ._core.hooks import Hooks, JobEvent
from ._core.interfaces import FailedJobs, Worker
from ._core.job import Job
from ._core.retry import RetryPolicy
from ._core.schedule import Schedule
from ._core.typed import BoundJobRef, JobRef, TypedHandler
from ._memory.worker import SimpleWorker
from ._rabbitmq.settings import AMQPSettings, WorkerOptions
from ._rabbitmq.topology import Topology
from ._rabbitmq.worker import AMQPWorker
from .errors import (
    AccessRefused,
    AmqpWorkerError,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    FailedJobNotFound,
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidArgs,
    InvalidHandler,
    InvalidSchedule,
    JobCrashed,
    JobTimeout,
    JobTooLarge,
    PermanentError,
    PublishError,
    PublishNacked,
    PublishReturned,
    Retry,
    TopologyConflict,
)

try:
    __version__ = _version("amqp-worker")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AMQPSettings",
    "AMQPWorker",
    "AccessRefused",
    "AmqpWorkerError",
    "AttemptRecord",
    "BoundJobRef",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "FailedJob",
    "FailedJobNotFound",
    "FailedJobs",
    "FailedJobsResult",
    "FailureReason",
    "Handler",
    "HandlerAlreadyRegistered",
    "HandlerNotRegistered",
    "HandlerSpec",
    "Hooks",
    "InvalidArgs",
    "InvalidHandler",
    "InvalidSchedule",
    "Job",
    "JobCrashed",
    "JobEvent",
    "JobRef",
    "JobTimeout",
    "JobTooLarge",
    "PermanentError",
    "PublishError",
    "PublishNacked",
    "PublishReturned",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "SimpleWorker",
    "Topology",
    "TopologyConflict",
    "TypedHandler",
    "Worker",
    "WorkerOptions",
    "__version__",
]
