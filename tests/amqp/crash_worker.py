"""A worker in its own process whose ``poison`` handler kills it: ``python -m tests.amqp.crash_worker``.

Arguments: URL NAME QUEUE QUEUE_TYPE MAX_DELIVERIES DONE_DIR. ``poison`` calls
``os._exit(1)``, as a segfault or the OOM killer would end the process: no
cleanup, no ack, no nack. ``innocent`` takes a moment (so some run beside the
poison) and then creates ``DONE_DIR/<job id>``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from amqp_worker import AMQPWorker, Job


async def main(
    url: str, name: str, queue: str, queue_type: str, max_deliveries: str, done: str
) -> None:
    worker = AMQPWorker(
        url,
        name=name,
        queues=[queue],
        queue_type=queue_type,  # type: ignore[arg-type]
        max_deliveries=int(max_deliveries),
        max_concurrency=4,
    )

    async def poison(args: dict[str, Any]) -> None:
        await asyncio.sleep(0.2)  # let the innocent ones start beside it
        os._exit(1)

    async def innocent(args: dict[str, Any], job: Job) -> None:
        await asyncio.sleep(0.1)
        await asyncio.to_thread(Path(done, job.id).touch)

    worker.register("poison", poison)
    worker.register("innocent", innocent)
    async with worker:
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
