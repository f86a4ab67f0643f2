"""A worker module for the ``amqp-worker run`` daemon: define the worker, register handlers.

    export AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/
    amqp-worker run examples.daemon:worker          # from the repository root
    amqp-worker enqueue --queue emails --handler send_email --args '{"user_id": 1}'

The daemon handles signals, logging (--log-format json), shutdown and the
health check; this module only says what the jobs do. Settings come from
AMQP_WORKER_* variables, and options of ``amqp-worker run`` override them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job, PermanentError

logger = logging.getLogger("examples.daemon")

worker = AMQPWorker(queues=["emails"])


@worker.handler("send_email")
def send_email(args: dict[str, Any]) -> None:
    """A sync handler: it runs in a worker thread, so blocking I/O is fine."""
    if "user_id" not in args:
        raise PermanentError("send_email needs a user_id")  # parked at once, never retried
    logger.info("sent email to user %s", args["user_id"])


class Digest(BaseModel):
    """Typed args: a job whose args don't fit is parked as invalid_args, never run."""

    user_id: int
    items: int = 10


@worker.handler("send_digest")
async def send_digest(args: Digest, job: Job) -> None:
    await asyncio.sleep(0.1)  # stand-in for real work
    logger.info(
        "sent a digest of %d items to user %s (job %s, attempt %d)",
        args.items,
        args.user_id,
        job.id[:8],
        job.attempt,
    )
