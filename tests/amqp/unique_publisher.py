"""A publisher in its own process, for the unique-jobs race: ``python -m tests.amqp.unique_publisher``.

Arguments: URL NAME QUEUE PREFIX COUNT. Connects, prints ``ready``, and waits
for a line on stdin (so every publisher starts at once), then performs one job per key
``PREFIX.0`` .. ``PREFIX.<COUNT-1>``, all concurrently and in a shuffled
order, over its own connection. Prints one JSON line: the keys it enqueued,
how many performs raised DuplicateJob (each with its key) and any other error.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from amqp_worker import AMQPWorker, DuplicateJob, Job


async def main(url: str, name: str, queue: str, prefix: str, count: str) -> None:
    worker = AMQPWorker(url, name=name, queues=[queue], publish_timeout_s=30)
    keys = [f"{prefix}.{n}" for n in range(int(count))]
    random.shuffle(keys)
    accepted: list[str] = []
    refused: list[str] = []
    errors: list[str] = []

    async def one(key: str) -> None:
        try:
            await worker.perform(
                Job(handler="unique", queue=queue, unique_key=key, args={"key": key})
            )
            accepted.append(key)
        except DuplicateJob as exc:
            refused.append(exc.key)
        except Exception as exc:
            errors.append(f"{key}: {type(exc).__name__}: {exc}")

    try:
        await worker.perform(Job(handler="warm-up", queue=queue))  # connect and declare first
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the test says go to every publisher at once
        await asyncio.gather(*(one(key) for key in keys))
    finally:
        await worker.stop()
    print(json.dumps({"accepted": accepted, "refused": refused, "errors": errors}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
