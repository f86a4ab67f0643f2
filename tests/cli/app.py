"""Workers for the CLI tests to run: ``amqp-worker run tests.cli.app:worker`` and friends.

Handlers leave marker files in ``$AW_CLI_TEST_DIR`` so tests can see progress:
``<job id>.started`` and ``<job id>.done``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from amqp_worker import AMQPWorker, Job, PermanentError, RetryPolicy, SimpleWorker

OUT = Path(os.environ.get("AW_CLI_TEST_DIR", "."))


def _mark(job: Job, what: str) -> None:
    (OUT / f"{job.id}.{what}").write_text(str(job.attempt))


def build(worker: AMQPWorker | SimpleWorker) -> AMQPWorker | SimpleWorker:
    """Register the test handlers on ``worker``."""

    @worker.handler("touch")
    async def touch(args: dict[str, Any], job: Job) -> None:
        await asyncio.to_thread(_mark, job, "started")
        await asyncio.sleep(float(args.get("sleep", 0)))
        await asyncio.to_thread(_mark, job, "done")

    @worker.handler("block")
    def block(args: dict[str, Any], job: Job) -> None:
        """A sync handler that takes a while, in a thread that cannot be cancelled."""
        _mark(job, "started")
        time.sleep(float(args.get("sleep", 60)))
        _mark(job, "done")

    @worker.handler("boom")
    def boom(args: dict[str, Any]) -> None:
        raise PermanentError(f"boom: {args.get('why', 'no reason')}")

    @worker.handler("flaky", retry=RetryPolicy(max_retries=1, base_s=0, jitter=0))
    def flaky(args: dict[str, Any]) -> None:
        raise ValueError("flaky failed")

    return worker


worker = build(AMQPWorker(queues=["default"], retry=RetryPolicy(max_retries=0)))


def make_worker() -> AMQPWorker | SimpleWorker:
    """A zero-argument factory."""
    return build(AMQPWorker(queues=["default"]))


simple = build(SimpleWorker(max_concurrency=2))
not_a_worker = 42


def needs_args(url: str) -> AMQPWorker:
    return AMQPWorker(url)


def returns_nothing() -> None:
    return None
