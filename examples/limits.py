"""Rate and concurrency limits: at most 5 SMS a second, at most 2 PDFs rendering at once.

Run it with ``scripts/example`` (or ``python examples/limits.py``). With
``AMQP_WORKER_URL`` set it uses RabbitMQ, where the limits hold across every
worker process of the same name; without it, the in-process ``SimpleWorker``
applies the same bounds. docs/controls.md#rate-and-concurrency-limits has
the semantics; ``amqp-worker limits examples.limits:worker`` shows what waits.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from amqp_worker import AMQPWorker, Job, SimpleWorker, Worker

JOBS = 10


def make_worker() -> Worker:
    url = os.environ.get("AMQP_WORKER_URL")
    if url:
        return AMQPWorker(url, queues=["limited"])
    return SimpleWorker()


worker = make_worker()
started = time.monotonic()
done: asyncio.Queue[str] = asyncio.Queue()
rendering = 0


@worker.handler("send_sms", rate="5/s", burst=2)
async def send_sms(args: dict[str, Any]) -> None:
    print(f"{time.monotonic() - started:5.2f}s  sms to {args['to']}")
    done.put_nowait("sms")


@worker.handler("render_pdf", concurrency=2)
async def render_pdf(args: dict[str, Any]) -> None:
    global rendering
    rendering += 1
    print(f"{time.monotonic() - started:5.2f}s  rendering pdf {args['n']} ({rendering} at once)")
    await asyncio.sleep(0.2)
    rendering -= 1
    done.put_nowait("pdf")


async def main() -> None:
    if isinstance(worker, SimpleWorker):
        print("AMQP_WORKER_URL is not set: using the in-process SimpleWorker")
    async with worker:
        for n in range(JOBS):
            await worker.perform(Job(queue="limited", handler="send_sms", args={"to": f"+1555{n}"}))
            await worker.perform(Job(queue="limited", handler="render_pdf", args={"n": n}))
        for _ in range(2 * JOBS):
            await asyncio.wait_for(done.get(), 60)
    print("all done: SMS spread over about 2 seconds, never more than 2 PDFs at once")


if __name__ == "__main__":
    asyncio.run(main())
