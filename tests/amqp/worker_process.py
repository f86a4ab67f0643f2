"""A worker in its own process, for tests that kill it: ``python -m tests.amqp.worker_process``.

Arguments: URL NAME QUEUE MARKER. Its ``slow`` handler writes the job id to
MARKER, then blocks for an hour, so the test can SIGKILL it mid-job.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from amqp_worker import AMQPWorker, Job


async def main(url: str, name: str, queue: str, marker: str) -> None:
    worker = AMQPWorker(url, name=name, queues=[queue])

    async def slow(args: dict[str, object], job: Job) -> None:
        await asyncio.to_thread(Path(marker).write_text, job.id)
        await asyncio.sleep(3600)

    worker.register("slow", slow)
    async with worker:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
