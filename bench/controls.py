"""What each fleet control costs: enqueue and consume rates with it, against none, same run.

Usage::

    python3 bench/controls.py                    # 5,000 jobs per case (bench/README.md has a run)
    python3 bench/controls.py --jobs 500 --json  # a quick look

For each case, on a worker ``name`` of its own: enqueue N jobs with
``perform_many`` (pipelined confirms; one at a time where the control needs
it), then start one AMQPWorker (an async no-op handler, ``max_concurrency``
32) and time from its first job to its last. The baseline is the same worker with no
control ("none"), and raw aio-pika (publish with confirms, consume and ack),
measured in the same run; ratios are against "none". Every case checks that
each job ran exactly once, and deletes what it declared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aio_pika
from bench._shared import describe, environment

from amqp_worker import AMQPWorker, Job
from amqp_worker.testing import delete_topology

DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = "bench"
GUARD_S = 600.0


@dataclass(frozen=True)
class Case:
    """One row: the worker options and how each job is built."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    fields: Callable[[int], dict[str, Any]] = lambda n: {}
    handler_options: dict[str, Any] = field(default_factory=dict)


def cases() -> list[Case]:
    later = datetime.now(UTC) + timedelta(days=1)
    return [
        Case("none"),
        Case(
            "expiry (expires_at + max_age_s)",
            {},
            lambda n: {"expires_at": later},
            {"max_age_s": 3600},
        ),
        Case("priorities (max_priority=9)", {"max_priority": 9}, lambda n: {"priority": n % 10}),
        Case(
            "per-key order (partitions=8, 64 keys)",
            {"partitions": 8},
            lambda n: {"partition_key": f"key-{n % 64}"},
        ),
        Case("unique jobs (a key per job)", {}, lambda n: {"unique_key": f"job-{n}"}),
        # Limits set above what the worker does without them: what the mechanism costs.
        Case("concurrency limit (concurrency=32)", handler_options={"concurrency": 32}),
        Case(
            "rate limit (rate=20000/s, burst=200)",
            handler_options={"rate": "20000/s", "burst": 200},
        ),
        Case(
            "per-key limits (1000000/min, 32 at once, 8 keys)",
            handler_options={
                "rate": "1000000/min",
                "concurrency": 32,
                "limit_key": lambda job: str(job.args["n"] % 8),
            },
        ),
    ]


async def run_case(url: str, case: Case, jobs: int) -> dict[str, Any]:
    name = f"awbench-ctl-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(url, name=name, queues=[QUEUE], max_concurrency=32, **case.options)
    ran: dict[int, int] = {}
    finished = asyncio.Event()
    first: list[float] = []

    async def noop(args: dict[str, Any]) -> None:
        if not first:
            first.append(time.perf_counter())
        n = int(args["n"])
        ran[n] = ran.get(n, 0) + 1
        if len(ran) == jobs:
            finished.set()

    worker.register("noop", noop, **case.handler_options)
    batch = [Job(handler="noop", queue=QUEUE, args={"n": n}, **case.fields(n)) for n in range(jobs)]
    try:
        started = time.perf_counter()
        await worker.perform_many(batch)
        enqueue_s = time.perf_counter() - started
        async with worker:
            await asyncio.wait_for(finished.wait(), GUARD_S)
            # From the first job to the last: the worker's start (declarations) is not counted.
            consume_s = time.perf_counter() - first[0]
    finally:
        await worker.stop()
        await delete_topology(worker)
    twice = [n for n, count in ran.items() if count != 1]
    if len(ran) != jobs or twice:
        raise RuntimeError(f"{case.name}: {jobs - len(ran)} never ran, {len(twice)} ran twice")
    return {
        "case": case.name,
        "jobs": jobs,
        "enqueue_jobs_per_s": round(jobs / enqueue_s),
        "consume_jobs_per_s": round(jobs / consume_s),
    }


async def raw(url: str, jobs: int) -> dict[str, Any]:
    """Raw aio-pika: persistent publishes with confirms (pipelined), then consume and ack."""
    queue_name = f"awbench-ctl-raw-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=64)
        queue = await channel.declare_queue(queue_name, durable=True)
        body = json.dumps({"handler": "noop", "queue": QUEUE, "args": {"n": 0}}).encode()
        started = time.perf_counter()
        pending = [
            channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                queue_name,
            )
            for _ in range(jobs)
        ]
        for chunk in range(0, jobs, 256):
            await asyncio.gather(*pending[chunk : chunk + 256])
        enqueue_s = time.perf_counter() - started
        seen = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            json.loads(message.body)
            await message.ack()
            seen += 1
            if seen == jobs:
                done.set()

        started = time.perf_counter()  # nothing to declare: consuming starts at once
        tag = await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), GUARD_S)
        consume_s = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return {
        "case": "raw aio-pika",
        "jobs": jobs,
        "enqueue_jobs_per_s": round(jobs / enqueue_s),
        "consume_jobs_per_s": round(jobs / consume_s),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows = [await raw(args.url, args.jobs)]
    for case in cases():
        rows.append(await run_case(args.url, case, args.jobs))
    none = next(row for row in rows if row["case"] == "none")
    for row in rows:
        for kind in ("enqueue", "consume"):
            row[f"{kind}_vs_none"] = round(
                row[f"{kind}_jobs_per_s"] / none[f"{kind}_jobs_per_s"], 2
            )
    return {"rows": rows, "environment": await environment(args.url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--url", default=DEFAULT_URL, help="broker URL (AMQP_WORKER_BENCH_URL)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe(report["environment"]))
    print(f"{'case':42} {'enqueue/s':>10} {'x none':>7} {'consume/s':>10} {'x none':>7}")
    for row in report["rows"]:
        print(
            f"{row['case']:42} {row['enqueue_jobs_per_s']:>10} {row['enqueue_vs_none']:>7} "
            f"{row['consume_jobs_per_s']:>10} {row['consume_vs_none']:>7}"
        )


if __name__ == "__main__":
    main()
