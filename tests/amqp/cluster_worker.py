"""A worker process for the cluster tests: ``python -m tests.amqp.cluster_worker URLS NAME QUEUE OUT [ORDER]``.

It consumes QUEUE (quorum queues) from the cluster whose nodes URLS lists, and
appends ``<unix time> <job id>`` to OUT for every job it runs. ``flaky`` jobs
fail their first attempt and run on the retry. Logs go to stderr. With ORDER
``given``, the URL list is not shuffled, so the worker dials the first node: the
test knows which worker the node loss cuts off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from typing import Any

from amqp_worker import AMQPWorker, Job, RetryPolicy

PREFETCH = 20


async def main(urls: str, name: str, queue: str, out: str, order: str = "shuffled") -> None:
    if order == "given":
        random.shuffle = lambda items: None  # type: ignore[assignment]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    worker = AMQPWorker(
        urls,
        name=name,
        queues=[queue],
        queue_type="quorum",
        max_concurrency=10,
        prefetch=PREFETCH,
        heartbeat_s=5,
        reconnect_interval_s=0.5,
        publish_timeout_s=60,
        retry=RetryPolicy(max_retries=5, base_s=4, jitter=0),
    )
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def record(job: Job) -> None:
        # One write per line with O_APPEND: whole lines, even from several processes.
        os.write(fd, f"{time.time():.3f} {job.id}\n".encode())

    async def run(args: dict[str, Any], job: Job) -> None:
        record(job)

    async def flaky(args: dict[str, Any], job: Job) -> None:
        if job.attempt == 0:
            raise RuntimeError("the first attempt fails; its retry waits in the delay queues")
        record(job)

    worker.register("run", run)
    worker.register("flaky", flaky)
    async with worker:
        # start() returned: the whole topology is declared (the test kills a node after this).
        os.close(os.open(out + ".started", os.O_WRONLY | os.O_CREAT))
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
