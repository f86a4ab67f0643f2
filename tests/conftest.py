"""Shared fixtures. ``kit`` builds workers for the contract suite, one param per implementation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from amqp_worker import Job, SimpleWorker, Worker

IMPLEMENTATIONS = ["simple"]


class WorkerKit:
    """Builds workers of one implementation, with names no other test uses."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.queue = f"test.{uuid.uuid4().hex[:12]}"
        self.workers: list[Any] = []

    def make(self, **options: Any) -> Worker:
        worker = SimpleWorker(**options)
        self.workers.append(worker)
        return worker

    def job(self, handler: str, args: dict[str, Any] | None = None, **fields: Any) -> Job:
        return Job(handler=handler, queue=self.queue, args=args or {}, **fields)

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop(timeout_s=0)


@pytest.fixture(params=IMPLEMENTATIONS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[WorkerKit]:
    kit = WorkerKit(request.param)
    try:
        yield kit
    finally:
        await kit.close()
