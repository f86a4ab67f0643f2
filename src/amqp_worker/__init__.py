"""amqp-worker: background jobs on RabbitMQ with Buffalo's small Worker interface.

Start with :class:`SimpleWorker` (in process, no broker) and switch to
:class:`AMQPWorker` for durable, confirmed jobs; both follow :class:`Worker`.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .amqp import AMQPWorker
from .errors import (
    AmqpWorkerError,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidArgs,
    InvalidHandler,
    PublishError,
    PublishNacked,
    PublishReturned,
    TopologyConflict,
)
from .handlers import Handler
from .job import Job
from .protocol import Worker
from .settings import AMQPSettings
from .simple import SimpleWorker

try:
    __version__ = _version("amqp-worker")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AMQPSettings",
    "AMQPWorker",
    "AmqpWorkerError",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "Handler",
    "HandlerAlreadyRegistered",
    "HandlerNotRegistered",
    "InvalidArgs",
    "InvalidHandler",
    "Job",
    "PublishError",
    "PublishNacked",
    "PublishReturned",
    "SimpleWorker",
    "TopologyConflict",
    "Worker",
    "__version__",
]
