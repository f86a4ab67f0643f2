"""A worker for the ``run --processes`` tests: handlers that say which process ran them.

Each job leaves (a long one also ``<job id>.started`` as it begins) ``<job id>.<pid>`` in ``$AW_CLI_TEST_DIR`` when it finishes, so a
test sees every run of every job, and which child ran it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from amqp_worker import AMQPWorker, Job, RetryPolicy

OUT = Path(os.environ.get("AW_CLI_TEST_DIR", "."))

worker = AMQPWorker(queues=["default"], retry=RetryPolicy(max_retries=0))

#: Memory the hog handler keeps, so its process stays over a memory limit.
_kept: list[bytearray] = []


@worker.handler("work")
def work(args: dict[str, Any], job: Job) -> None:
    """Sleep ``sleep`` seconds (in a handler thread), then leave a marker."""
    if args.get("sleep", 0) >= 1:
        (OUT / f"{job.id}.started").touch()
    time.sleep(float(args.get("sleep", 0)))
    (OUT / f"{job.id}.{os.getpid()}").write_text(str(job.attempt))


@worker.handler("hog")
def hog(args: dict[str, Any], job: Job) -> None:
    """Keep ``mib`` MiB of memory, touched so it is resident."""
    _kept.append(bytearray(b"x" * (int(args["mib"]) * 2**20)))
    (OUT / f"{job.id}.{os.getpid()}").write_text(str(job.attempt))


@worker.handler("die")
def die(args: dict[str, Any]) -> None:
    """Kill the process that runs it, as a segfault or the OOM killer would."""
    os._exit(9)
