"""amqp-worker: background jobs on RabbitMQ with Buffalo's small Worker interface.

Start with :class:`SimpleWorker` (in process, no broker) and switch to
:class:`AMQPWorker` for durable, confirmed jobs; both follow :class:`Worker`.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._core.failures import AttemptRecord, FailedJob, FailedJobsResult, FailureReason
from ._core.groups import GroupHandle, GroupStatus, ParkedMember
from ._core.handlers import Handler, HandlerSpec
from ._core.hooks import Hooks, JobEvent
from ._core.interfaces import FailedJobs, Worker
from ._core.job import Job
from ._core.limits import Limits
from ._core.results import JobHandle, JobResult
from ._core.retry import RetryPolicy
from ._core.schedule import Schedule
from ._core.typed import BoundJobRef, JobRef, TypedHandler
from ._core.workflow import Chain, Group, chain, group
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
    DuplicateJob,
    FailedJobNotFound,
    GroupExists,
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidArgs,
    InvalidControl,
    InvalidHandler,
    InvalidResult,
    InvalidSchedule,
    InvalidWorkflow,
    JobCancelled,
    JobCrashed,
    JobExpired,
    JobFailed,
    JobTimeout,
    JobTooLarge,
    PermanentError,
    PublishError,
    PublishNacked,
    PublishReturned,
    ResultTimeout,
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
    "Chain",
    "ConfigurationError",
    "DuplicateJob",
    "FailedJob",
    "FailedJobNotFound",
    "FailedJobs",
    "FailedJobsResult",
    "FailureReason",
    "Group",
    "GroupExists",
    "GroupHandle",
    "GroupStatus",
    "Handler",
    "HandlerAlreadyRegistered",
    "HandlerNotRegistered",
    "HandlerSpec",
    "Hooks",
    "InvalidArgs",
    "InvalidControl",
    "InvalidHandler",
    "InvalidResult",
    "InvalidSchedule",
    "InvalidWorkflow",
    "Job",
    "JobCancelled",
    "JobCrashed",
    "JobEvent",
    "JobExpired",
    "JobFailed",
    "JobHandle",
    "JobRef",
    "JobResult",
    "JobTimeout",
    "JobTooLarge",
    "Limits",
    "ParkedMember",
    "PermanentError",
    "PublishError",
    "PublishNacked",
    "PublishReturned",
    "ResultTimeout",
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
    "chain",
    "group",
]
