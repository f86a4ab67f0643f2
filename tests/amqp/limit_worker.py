"""A worker in its own process for fleet-wide limit tests: ``python -m tests.amqp.limit_worker``.

Arguments: URL NAME QUEUE RUNS. Handler ``rated`` (``rate="50/s"``,
``burst=5``) appends ``start <n> <wall time> <pid>``; handler ``capped``
(``concurrency=3``) appends ``start`` and, 0.1 s later, ``end`` lines;
handler ``keyed`` (``rate="5/s"``, ``concurrency=2`` per ``tenant``) the
same, each line ending with the tenant.
Appends are single ``O_APPEND`` writes, so lines of several processes never
mix. SIGTERM stops it cleanly; the tests SIGKILL it to crash it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from amqp_worker import AMQPWorker
from tests.amqp.group_worker import record

RATE, BURST, CONCURRENCY = "50/s", 5, 3
KEY_RATE, KEY_CONCURRENCY = "5/s", 2


async def main(url: str, name: str, queue: str, runs: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    worker = AMQPWorker(url, name=name, queues=[queue], max_concurrency=8)

    async def rated(args: dict[str, Any]) -> None:
        record(runs, f"start {args['n']} {time.time():.6f} {os.getpid()}")

    async def capped(args: dict[str, Any]) -> None:
        record(runs, f"start {args['n']} {time.time():.6f} {os.getpid()}")
        await asyncio.sleep(0.1)
        record(runs, f"end {args['n']} {time.time():.6f} {os.getpid()}")

    async def keyed(args: dict[str, Any]) -> None:
        tenant = args["tenant"]
        record(runs, f"start {args['n']} {time.time():.6f} {os.getpid()} {tenant}")
        await asyncio.sleep(0.1)
        record(runs, f"end {args['n']} {time.time():.6f} {os.getpid()} {tenant}")

    worker.register("rated", rated, rate=RATE, burst=BURST)
    worker.register("keyed", keyed, rate=KEY_RATE, concurrency=KEY_CONCURRENCY, limit_key="tenant")
    worker.register("capped", capped, concurrency=CONCURRENCY)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with worker:
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
