"""amqp-worker: background jobs on RabbitMQ with Buffalo's small Worker interface.

Start with :class:`SimpleWorker` (in process, no broker) and switch to
:class:`AMQPWorker` for durable, confirmed jobs; both follow :class:`Worker`.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .amqp import AMQPWorker
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
from .failures import AttemptRecord, FailedJob, FailedJobsResult, FailureReason
from .handlers import Handler, HandlerSpec
from .hooks import Hooks, JobEvent
from .job import Job
from .protocol import FailedJobs, Worker
from .retry import RetryPolicy
from .schedule import Schedule
from .settings import AMQPSettings, WorkerOptions
from .simple import SimpleWorker
from .topology import Topology
from .typed import BoundJobRef, JobRef, TypedHandler

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
