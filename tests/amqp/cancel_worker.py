"""A worker in its own process for cancel tests: ``python -m tests.amqp.cancel_worker``.

Arguments: URL NAME QUEUE RUNS. It appends one line per event to the file
RUNS (``O_APPEND``: lines of several processes never mix):

- ``ready <pid>`` once ``start()`` returned (it has read every earlier cancel);
- ``ran <job id>``: the ``mark`` handler ran;
- ``started <job id>``, then ``interrupted <job id>`` if its cancel reached
  it: the ``hold`` handler, which otherwise waits an hour.

SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from amqp_worker import AMQPWorker, Job


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

    async def mark(args: dict[str, Any], job: Job) -> None:
        record(runs, f"ran {job.id}")

    async def hold(args: dict[str, Any], job: Job) -> None:
        record(runs, f"started {job.id}")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            record(runs, f"interrupted {job.id}")
            raise

    worker.register("mark", mark)
    worker.register("hold", hold)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with worker:
        record(runs, f"ready {os.getpid()}")
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
