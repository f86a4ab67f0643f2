"""Results and workflows: a job's return value, a chain, and a group with a callback.

    python examples/workflows.py                 # in process (SimpleWorker)
    AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/ python examples/workflows.py

On RabbitMQ the results live in one stream (``<name>.results``) and the group
in a queue of its own until its callback is let go: no Redis, no database.
docs/workflows.md has the design and the failure cases.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker, chain, group

QUEUE = "workflows"


class Invoice(BaseModel):
    """A typed result: kept as JSON, read back with ``result(model=Invoice)``."""

    order_id: int
    total_cents: int


def make_worker() -> Worker:
    url = os.environ.get("AMQP_WORKER_URL")
    if url:
        print("using RabbitMQ (AMQP_WORKER_URL is set)")
        return AMQPWorker(url, queues=[QUEUE])
    print("no AMQP_WORKER_URL set: using the in-process SimpleWorker (it persists nothing)")
    return SimpleWorker()


async def main() -> None:
    worker = make_worker()
    summary: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    @worker.handler("invoice", result=True)
    async def invoice(args: dict[str, Any]) -> Invoice:
        return Invoice(order_id=args["order_id"], total_cents=args["cents"] * args["qty"])

    @worker.handler("fetch", result=True)
    async def fetch(args: dict[str, Any]) -> list[int]:
        return list(range(1, args["n"] + 1))

    @worker.handler("total", result=True)
    async def total(args: dict[str, Any]) -> int:
        return sum(args["numbers"])  # the previous step's result, under result_into

    @worker.handler("square", result=True)
    async def square(args: dict[str, Any]) -> int:
        return int(args["x"]) ** 2

    @worker.handler("summarize")
    async def summarize(args: dict[str, Any]) -> None:
        await summary.put(args)  # runs once, after every member succeeded

    async with worker:
        # 1. A result: perform returns a JobHandle (the job id, as a str) that can wait.
        handle = await worker.perform(
            Job(handler="invoice", queue=QUEUE, args={"order_id": 7, "cents": 250, "qty": 3})
        )
        bill = await handle.result(timeout_s=30, model=Invoice)
        print(f"result: order {bill.order_id} totals {bill.total_cents} cents")

        # 2. A chain: each step starts after the previous succeeded, and gets its result.
        steps = chain(
            Job(handler="fetch", queue=QUEUE, args={"n": 4}),
            Job(handler="total", queue=QUEUE),
            result_into="numbers",
        )
        last = await worker.perform_chain(steps)
        print(f"chain: fetch -> total = {await last.result(timeout_s=30)}")

        # 3. A group: squares side by side, then one callback after all of them.
        squares = group(
            [Job(handler="square", queue=QUEUE, args={"x": x}) for x in range(1, 6)],
            then=Job(handler="summarize", queue=QUEUE, args={"what": "squares"}),
            group_id=f"squares-{os.urandom(4).hex()}",  # optional; names its queue on RabbitMQ
        )
        running = await worker.perform_group(squares)
        values = await running.results(timeout_s=30)
        called = await asyncio.wait_for(summary.get(), 30)
        status = await running.wait(timeout_s=30)
        print(f"group {running.id}: {len(running.members)} members")
        print(f"group: squares {values}, sum {sum(int(str(v)) for v in values)}")
        print(
            f"group: callback ran for {called['what']}; state {status.state}, "
            f"{status.succeeded}/{status.size} succeeded"
        )
    print("workflows example done")


if __name__ == "__main__":
    asyncio.run(main())
