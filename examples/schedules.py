"""Periodic jobs: a heartbeat every 2 seconds and a nightly report, on any number of replicas.

    python examples/schedules.py                 # in process (SimpleWorker)
    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/schedules.py

Start it in several terminals with AMQP_WORKER_URL set: each heartbeat tick
still runs once, whichever replica leads. Then `amqp-worker schedules` shows
the schedules and the leader. Pass --ticks N to exit after N heartbeats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import timedelta
from typing import Any

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker

url = os.environ.get("AMQP_WORKER_URL")
worker: Worker = AMQPWorker(url, queues=["periodic"]) if url else SimpleWorker()
heartbeats = 0
enough = asyncio.Event()
limit: int | None = None


@worker.handler("heartbeat")
async def heartbeat(args: dict[str, Any], job: Job) -> None:
    """job.scheduled_at is the tick this run is for; job.id is the same for any duplicate."""
    global heartbeats
    heartbeats += 1
    assert job.scheduled_at is not None
    late_s = (job.enqueued_at - job.scheduled_at).total_seconds()
    print(f"heartbeat {job.id} (enqueued {late_s * 1000:.0f} ms after its tick)", flush=True)
    if limit is not None and heartbeats >= limit:
        enough.set()


@worker.handler("report")
async def report(args: dict[str, Any], job: Job) -> None:
    print(f"nightly report for {job.scheduled_at:%Y-%m-%d}", flush=True)


worker.schedule(
    "heartbeat",
    Job(handler="heartbeat", queue="periodic"),
    every=timedelta(seconds=2),
    missed="skip",  # a heartbeat missed while nothing ran is not worth sending late
)
worker.schedule(
    "nightly-report",
    Job(handler="report", queue="periodic"),
    cron="0 2 * * *",
    tz="Europe/Berlin",  # 02:00 Berlin time, DST handled like Debian cron
)


async def main() -> None:
    async with worker:
        if limit is None:
            await asyncio.Event().wait()  # until Ctrl-C
        await enough.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, help="exit after this many heartbeats")
    limit = parser.parse_args().ticks
    asyncio.run(main())
