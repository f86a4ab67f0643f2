"""Every default a user can change, each written once, here.

The workers, the settings, the CLI and typed enqueue all take their defaults
from this module, so a default never differs between two places.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CANCELS_MAX_BYTES",
    "DEFAULT_CANCEL_TTL_S",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_LOOP_STALL_WARN_S",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_NAME",
    "DEFAULT_QUEUE",
    "DEFAULT_STOP_TIMEOUT_S",
    "DEFAULT_UNIQUE_FOR_S",
]

#: The worker name: the namespace of the exchanges and internal queues.
DEFAULT_NAME = "amqp_worker"

#: ``Job.queue`` when neither the job, the typed reference nor the call names one.
DEFAULT_QUEUE = "default"

#: How many handlers run at once unless told otherwise.
DEFAULT_MAX_CONCURRENCY = 25

#: How long ``stop()`` waits for running handlers unless told otherwise, in seconds.
DEFAULT_STOP_TIMEOUT_S = 30.0

#: The largest JSON body of a job, in bytes (``max_message_bytes``).
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

#: Default of ``loop_stall_warn_s``, in seconds. Healthy async code gives the loop
#: back within milliseconds, so a full second is always a blocking call, while GC
#: pauses and a busy machine stay well below it; and it is far below any
#: heartbeat_s, so the warning comes before the broker drops the connection.
DEFAULT_LOOP_STALL_WARN_S = 1.0

#: The broker-side delivery limit of quorum queues that hold jobs. RabbitMQ 4.0+
#: would otherwise apply 20 and *drop* what passes it. amqp-worker's own
#: crash-loop handling (quarantine.py) parks a job long before; this is the
#: safety net, far above what hand-backs and failed-job reads can add up to.
DEFAULT_DELIVERY_LIMIT = 1000

#: How long ``JobHandle.result()`` waits unless told otherwise, in seconds.
DEFAULT_RESULT_WAIT_S = 30.0

#: How long a job's result stays readable unless told otherwise (``result_ttl_s``): a day.
DEFAULT_RESULT_TTL_S = 24 * 3600.0

#: The most the results stream holds on RabbitMQ unless told otherwise: 1 GiB.
DEFAULT_RESULTS_MAX_BYTES = 1024**3

#: How long a ``unique_key`` lock lasts at most, for jobs without their own
#: ``unique_for_s``: an hour (``unique_for_s`` of both workers).
DEFAULT_UNIQUE_FOR_S = 3600.0

#: How long a cancel is remembered unless told otherwise (``cancel_ttl_s``): 7 days. A job
#: that reaches a worker later than this after its cancel runs (docs/controls.md).
DEFAULT_CANCEL_TTL_S = 7 * 24 * 3600.0

#: The most the cancellations stream holds on RabbitMQ unless told otherwise: 64 MiB
#: (about 200,000 cancels).
DEFAULT_CANCELS_MAX_BYTES = 64 * 1024**2
