"""A replica with one schedule, in its own process: ``python -m tests.amqp.schedule_worker``.

Arguments: URL NAME TICK_QUEUE. It schedules ``every=1`` s, ``missed="all"``,
a job onto TICK_QUEUE (which the test drains itself) and runs until killed.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from amqp_worker import AMQPWorker, Job


async def main(url: str, name: str, tick_queue: str) -> None:
    # It consumes a queue nobody publishes to: its only work is its share of the schedule.
    worker = AMQPWorker(url, name=name, queues=[f"{tick_queue}.idle"])
    worker.schedule("hb", Job(handler="tick", queue=tick_queue), every=1, missed="all")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
