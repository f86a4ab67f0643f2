"""Unique jobs: a second enqueue of a live key is refused with DuplicateJob.

Run it with ``scripts/example`` (or ``python examples/unique_jobs.py``).
With ``AMQP_WORKER_URL`` set it uses RabbitMQ; without it, the in-process
``SimpleWorker``. docs/controls.md#unique-jobs has the semantics.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from amqp_worker import AMQPWorker, DuplicateJob, Job, SimpleWorker, Worker


def make_worker() -> Worker:
    url = os.environ.get("AMQP_WORKER_URL")
    if url:
        return AMQPWorker(url, queues=["reports"])
    print("AMQP_WORKER_URL is not set: using the in-process SimpleWorker")
    return SimpleWorker()


async def main() -> None:
    worker = make_worker()
    runs = asyncio.Queue[int]()

    async def rebuild_report(args: dict[str, Any]) -> None:
        print(f"rebuilding report {args['report']}")
        runs.put_nowait(args["report"])

    worker.register("rebuild_report", rebuild_report)
    # One rebuild per report at a time, however many clicks ask for one.
    key = f"rebuild-report-{uuid.uuid4().hex[:8]}"
    job = Job(queue="reports", handler="rebuild_report", args={"report": 7}, unique_key=key)
    await worker.perform(job)
    try:
        await worker.perform(job.model_copy(update={"id": str(uuid.uuid4())}))
    except DuplicateJob as exc:
        print(f"second rebuild refused: {exc}")
    async with worker:
        await asyncio.wait_for(runs.get(), 30)
        # Once the first one is finished (acked), its key is free again.
        for _ in range(300):
            try:
                await worker.perform(job.model_copy(update={"id": str(uuid.uuid4())}))
                print("after it finished, the key is free again")
                break
            except DuplicateJob:
                await asyncio.sleep(0.1)
        await asyncio.wait_for(runs.get(), 30)


if __name__ == "__main__":
    asyncio.run(main())
