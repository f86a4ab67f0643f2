"""What unique-job locks cost on RabbitMQ: K live keys, each a lock queue holding one token.

Usage::

    python3 bench/unique_locks.py                 # 10,000 keys (docs/controls.md has a run)
    python3 bench/unique_locks.py --keys 500 --json   # a quick look
    python3 bench/unique_locks.py --private-node   # on a private node of its own (run as root)

Takes K locks through an AMQPWorker's lock store (``RabbitLocks.take``, the
step every ``perform`` of a unique job adds; the jobs themselves are not
published, so only the locks are measured), ``--concurrency`` at a time, then
reads the node's memory (``rabbitmq-diagnostics memory_breakdown``: total,
``queue_procs``, ``mnesia``, ``binary``) and its queue count
(``rabbitmqctl list_queues``), and compares them with the same readings taken
before. Then releases every lock (``RabbitLocks.release``: get the token, ack,
delete the queue) and times that too. Every run uses its own
``awbench-uq-<hex>`` name and deletes any lock queue left, also after a failure.
The node must be one this machine's rabbitmqctl reaches (run as root or the
rabbitmq user): ``--node`` names it (default: the local default node), or
``--private-node`` starts a disposable one (tests/harness/broker_node.py), so
that 10,000 queues never weigh on a broker others use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._shared import describe, environment

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.unique_names import lock_queue

URL = os.environ.get("AMQP_WORKER_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _node(node: str | None) -> list[str]:
    return ["-n", node] if node else []


def memory_mb(node: str | None) -> dict[str, float]:
    """The node's memory by category, in MB (rabbitmq-diagnostics memory_breakdown)."""
    out = subprocess.run(
        ["rabbitmq-diagnostics", *_node(node), "memory_breakdown", "--unit", "mb", "-q"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): ([\d.]+) mb", out, re.M)}
    found["total"] = sum(found.values()) - found.get("reserved_unallocated", 0.0)
    return found


def queue_count(node: str | None, prefix: str) -> tuple[int, int]:
    """(all queues, queues whose name starts with ``prefix``) on the node's default vhost."""
    out = subprocess.run(
        ["rabbitmqctl", *_node(node), "list_queues", "name", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return len(out), sum(1 for name in out if name.startswith(prefix))


async def settle_memory(node: str | None) -> dict[str, float]:
    await asyncio.sleep(2.0)  # let the node's allocators and stats catch up
    return memory_mb(node)


async def run(url: str, node: str | None, keys: int, concurrency: int) -> dict[str, Any]:
    name = f"awbench-uq-{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(url, name=name, queues=["bench"], publish_timeout_s=60)
    jobs = [Job(handler="h", queue="bench", unique_key=f"key-{n}") for n in range(keys)]
    locks = worker._locks
    gate = asyncio.Semaphore(concurrency)

    async def each(action: Any, job: Job) -> None:
        async with gate:
            await action(job)

    try:
        await worker._broker.connect()
        before = await settle_memory(node)
        queues_before, _ = queue_count(node, name)
        started = time.perf_counter()
        await asyncio.gather(*(each(locks.take, job) for job in jobs))
        take_s = time.perf_counter() - started
        after = await settle_memory(node)
        queues_after, lock_queues = queue_count(node, f"{name}.unique.")
        started = time.perf_counter()
        await asyncio.gather(*(each(locks.release, job) for job in jobs))
        release_s = time.perf_counter() - started
        _, left = queue_count(node, f"{name}.unique.")
        released = await settle_memory(node)
    finally:
        channel = await worker._broker.plain_channel()
        for job in jobs:
            assert job.unique_key is not None
            await channel.queue_delete(lock_queue(name, job.unique_key))
        await worker.stop()
    delta = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in after}
    return {
        "keys": keys,
        "concurrency": concurrency,
        "take_s": round(take_s, 2),
        "takes_per_s": round(keys / take_s),
        "release_s": round(release_s, 2),
        "lock_queues": lock_queues,
        "queues_before_after": [queues_before, queues_after],
        "lock_queues_left_after_release": left,
        "memory_mb_before": round(before["total"], 1),
        "memory_mb_after": round(after["total"], 1),
        "memory_mb_after_release": round(released["total"], 1),
        "memory_delta_mb": {k: v for k, v in delta.items() if abs(v) >= 0.1},
        "kb_per_key": round(delta["total"] * 1024 / keys, 1),
        "environment": await environment(url),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--node", help="the node rabbitmqctl asks (default: its default)")
    parser.add_argument("--private-node", action="store_true", help="start a disposable node")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.private_node:
        from tests.harness.broker_node import BrokerNode

        with BrokerNode(name_prefix="awbench") as private:
            result = asyncio.run(run(private.url, private.node_name, args.keys, args.concurrency))
    else:
        result = asyncio.run(run(args.url, args.node, args.keys, args.concurrency))
    if args.json:
        print(json.dumps(result))
        return
    print(describe(result["environment"]))
    for field, value in result.items():
        if field != "environment":
            print(f"{field:32} {value}")


if __name__ == "__main__":
    main()
