"""A worker in its own process for per-key order tests: ``python -m tests.amqp.partition_worker``.

Arguments: URL NAME QUEUE PARTITIONS RUNS. Each ``step`` job (``{"key": k,
"n": n}``) appends ``start <k> <n> <pid>`` to the file RUNS when it begins and
``end <k> <n> <pid>`` when it ends (``O_APPEND``: lines of several processes
never mix), a moment apart, so a kill lands mid-job. SIGTERM stops it
cleanly; the tests SIGKILL it to crash it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from amqp_worker import AMQPWorker
from tests.amqp.group_worker import record


async def main(url: str, name: str, queue: str, partitions: str, runs: str) -> None:
    worker = AMQPWorker(
        url, name=name, queues=[queue], partitions=int(partitions), max_concurrency=8
    )

    async def step(args: dict[str, Any]) -> None:
        record(runs, f"start {args['key']} {args['n']} {os.getpid()}")
        await asyncio.sleep(0.02)
        record(runs, f"end {args['key']} {args['n']} {os.getpid()}")

    worker.register("step", step)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    async with worker:
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
