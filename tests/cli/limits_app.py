"""A worker with limited handlers for ``amqp-worker limits tests.cli.limits_app:worker``.

Its name and URL come from the CLI tests' ``AMQP_WORKER_*`` environment.
"""

from __future__ import annotations

import os
from typing import Any

from amqp_worker import AMQPWorker

worker = AMQPWorker(queues=[os.environ.get("AW_CLI_TEST_QUEUE", "default")])


def _nothing(args: dict[str, Any]) -> None:
    return None


worker.register("rated", _nothing, rate="5/s", burst=2)
worker.register("capped", _nothing, concurrency=1)
worker.register("keyed", _nothing, rate="10/min", limit_key="tenant")
worker.register("free", _nothing)
