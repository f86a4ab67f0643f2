"""A worker in its own process for group tests: ``python -m tests.amqp.group_worker``.

Arguments: URL NAME QUEUE RUNS. Every run of a handler appends one line to the
file RUNS (``O_APPEND``: lines of several processes never mix), before it
returns:

- ``member`` (``{"i": n}``): ``member <n> <attempt>``; it raises on attempt 0
  when ``n % 20 == 0`` (about 5% of the members fail once and are retried,
  quickly), and takes a moment otherwise, so a kill lands mid-group;
- ``callback``: ``callback <pid>``.

SIGTERM stops it cleanly; the tests SIGKILL it to crash it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from amqp_worker import AMQPWorker, Job, RetryPolicy

#: Retries of a failed member come back after about a tenth of a second.
QUICK_RETRY = RetryPolicy(max_retries=5, base_s=0.1, factor=1.0, jitter=0.0)


def record(runs: str, line: str) -> None:
    """Append ``line`` to ``runs`` in one write (atomic with O_APPEND)."""
    fd = os.open(runs, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


async def main(url: str, name: str, queue: str, runs: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    worker = AMQPWorker(url, name=name, queues=[queue], max_concurrency=8, publish_timeout_s=30)

    async def member(args: dict[str, Any], job: Job) -> int:
        index = int(args["i"])
        record(runs, f"member {index} {job.attempt}")
        if index % 20 == 0 and job.attempt == 0:
            raise RuntimeError(f"member {index} fails once")
        await asyncio.sleep(0.01)
        return index

    async def callback(args: dict[str, Any]) -> None:
        record(runs, f"callback {os.getpid()}")

    worker.register("member", member, retry=QUICK_RETRY, result=True)
    worker.register("callback", callback)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with worker:  # SIGTERM: a clean stop, every running job settled
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
