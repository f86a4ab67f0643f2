"""A plain sync service (Flask- or Django-style) that enqueues jobs, with no asyncio in sight.

    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/sync_publisher.py

``amqp_worker.sync.Publisher`` runs a publish-only AMQPWorker on a background
thread; each call blocks until RabbitMQ confirmed the job and returns its id.
Make one per process, share it between request threads, and close it at
shutdown. ``AMQP_WORKER_URL``, ``AMQP_WORKER_NAME`` and
``AMQP_WORKER_QUEUE_PREFIX`` (and the other ``AMQP_WORKER_*`` settings) apply.
Run ``amqp-worker run examples.daemon:worker`` to process the jobs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from amqp_worker import BrokerError, Job
from amqp_worker.sync import Publisher

# One per process. Nothing connects yet: the first perform starts the
# background thread and opens the connection.
publisher = Publisher()


def signup_view(user_id: int) -> tuple[int, dict[str, str]]:
    """What a request handler does: enqueue, and answer at once with the job id."""
    try:
        job_id = publisher.perform(
            Job(queue="emails", handler="send_email", args={"user_id": user_id})
        )
        publisher.perform_in(
            Job(queue="emails", handler="send_digest", args={"user_id": user_id, "items": 3}),
            timedelta(seconds=2),
        )
    except BrokerError as exc:
        # Not confirmed (broker down, queue full...): the job may not be enqueued.
        return 503, {"status": "try again later", "error": type(exc).__name__}
    return 202, {"status": "accepted", "job_id": job_id}


def main() -> None:
    with publisher:  # closes the connection and ends the thread
        # Like a threaded web server: several requests enqueue at once.
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(signup_view, range(1, 6)))
        for status, body in answers:
            if status != 202:
                raise SystemExit(f"a signup failed: {body}")
            print(f"enqueued job {body['job_id']}")
        print(f"{len(answers)} signups enqueued from 4 threads, each with a delayed digest")


if __name__ == "__main__":
    main()
