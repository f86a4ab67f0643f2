"""A consumer: handlers, including a typed-args one, and a worker that runs until Ctrl-C.

    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/consumer.py

Pass --until N to exit after N jobs (the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job

# Other settings (name, queue_prefix, concurrency...) come from AMQP_WORKER_* variables.
worker = AMQPWorker(os.environ.get("AMQP_WORKER_URL"), queues=["emails"])
done = 0
enough = asyncio.Event()
limit: int | None = None


def count() -> None:
    global done
    done += 1
    if limit is not None and done >= limit:
        enough.set()


@worker.handler("send_email")
def send_email(args: dict[str, Any]) -> None:
    """A sync handler: it runs in a worker thread, so blocking I/O is fine."""
    time.sleep(0.01)
    print(f"sent email to user {args['user_id']}", flush=True)
    count()


class Welcome(BaseModel):
    """Typed args: a job whose args don't fit is parked as invalid_args, never run."""

    user_id: int
    name: str = "friend"


@worker.handler("welcome")
async def welcome(args: Welcome, job: Job) -> None:
    print(f"welcomed {args.name} (user {args.user_id}, job {job.id[:8]})", flush=True)
    count()


async def main() -> None:
    global limit
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", type=int, help="exit after this many jobs")
    limit = parser.parse_args().until
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    async with worker:
        await enough.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
