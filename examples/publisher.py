"""A microservice that only enqueues jobs: it never consumes, and needs no start().

    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/publisher.py

The first perform connects and declares the target queue, so jobs are kept
even if no worker has ever run. Each perform returns once RabbitMQ confirmed
the job. Run examples/consumer.py to process them.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

from amqp_worker import AMQPWorker, Job


async def main() -> None:
    publisher = AMQPWorker(os.environ.get("AMQP_WORKER_URL"))
    try:
        job_id = await publisher.perform(
            Job(queue="emails", handler="send_email", args={"user_id": 123})
        )
        print(f"enqueued send_email as {job_id}")
        await publisher.perform_in(
            Job(queue="emails", handler="send_email", args={"user_id": 5}), 2
        )
        await publisher.perform_at(
            Job(queue="emails", handler="welcome", args={"user_id": 7, "name": "Ada"}),
            datetime.now(UTC) + timedelta(seconds=3),
        )
        ids = await publisher.perform_many(
            Job(queue="emails", handler="send_email", args={"user_id": n}) for n in range(10)
        )
        print(f"enqueued {len(ids)} more with pipelined confirms, plus 2 delayed jobs")
    finally:
        await publisher.stop()  # closes the connection it opened


if __name__ == "__main__":
    asyncio.run(main())
