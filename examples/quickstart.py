"""Quick start: register handlers, enqueue now / in / at, start and stop.

Run it with ``scripts/example`` (or ``python examples/quickstart.py``).
With ``AMQP_WORKER_URL`` set it uses RabbitMQ; without it, the in-process
``SimpleWorker``, and says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker


class Welcome(BaseModel):
    """Typed args: validated before the handler runs."""

    user_id: int
    name: str = "friend"


def make_worker() -> Worker:
    url = os.environ.get("AMQP_WORKER_URL")
    if url:
        print("using RabbitMQ (AMQP_WORKER_URL is set)")
        worker: Worker = AMQPWorker(url, queues=["default"])
        return worker
    print("no AMQP_WORKER_URL set: using the in-process SimpleWorker (it persists nothing)")
    return SimpleWorker()


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    worker = make_worker()
    done = asyncio.Event()
    ran: list[str] = []

    def mark(what: str) -> None:
        ran.append(what)
        print(f"{datetime.now(UTC):%H:%M:%S.%f} ran {what}")
        if len(ran) == 4:
            done.set()

    @worker.handler("send_email")
    def send_email(args: dict[str, Any]) -> None:  # sync: runs in a thread
        mark(f"send_email user_id={args['user_id']}")

    @worker.handler("welcome")
    async def welcome(args: Welcome, job: Job) -> None:  # async, typed args, envelope
        mark(f"welcome {args.name} (job {job.id[:8]}, attempt {job.attempt})")

    async with worker:  # start() ... stop()
        await worker.perform(Job(handler="send_email", args={"user_id": 123}))
        await worker.perform(Job(handler="welcome", args={"user_id": 7, "name": "Ada"}))
        await worker.perform_in(Job(handler="send_email", args={"user_id": 5}), 1.0)
        await worker.perform_at(
            Job(handler="send_email", args={"user_id": 6}),
            datetime.now(UTC) + timedelta(seconds=2),
        )
        await asyncio.wait_for(done.wait(), timeout=30)
    print("all 4 jobs ran, including the delayed ones; worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
