"""A plain sync service (Flask- or Django-style) that enqueues jobs, with no asyncio in sight.

    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/sync_publisher.py

``amqp_worker.sync.Publisher`` runs a publish-only AMQPWorker on a background
thread; each call blocks until RabbitMQ confirmed the job. Make one per
process, share it between request threads, and close it at shutdown.
Run ``amqp-worker run examples.daemon:worker`` to process the jobs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from amqp_worker import Job
from amqp_worker.sync import Publisher

publisher = Publisher(os.environ.get("AMQP_WORKER_URL"))


def signup_view(user_id: int) -> dict[str, str]:
    """What a request handler does: enqueue, answer at once with the job id."""
    job_id = publisher.perform(Job(queue="emails", handler="send_email", args={"user_id": user_id}))
    publisher.perform_in(
        Job(queue="emails", handler="send_digest", args={"user_id": user_id, "items": 3}),
        timedelta(seconds=2),
    )
    return {"status": "accepted", "job_id": job_id}


def main() -> None:
    with publisher:
        print(signup_view(1))
        # Like a threaded web server: several requests enqueue at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(signup_view, range(2, 6)))
        print(f"{len(answers)} more signups enqueued from 4 threads, each with a delayed digest")


if __name__ == "__main__":
    main()
