"""What cancel costs a worker that never cancels, against the code before it, same run.

Each round runs, in subprocesses, the same consume with this tree's
``src`` and with the baseline commit's (``--baseline``, extracted with ``git
archive``): SimpleWorker, then AMQPWorker draining ``--jobs`` trivial jobs
published beforehand (timed from the first job finished to the last). Then
it measures, with this tree only: the gate's per-job cost in the book, a
worker's ``start()`` (the sync marker), and the listener's read rate of
``--cancels`` cancels.

    python3 bench/cancel.py                      # 3 rounds, 20,000 jobs, baseline 3bd6bb6
    python3 bench/cancel.py --rounds 5 --json

It needs a RabbitMQ at amqp://guest:guest@127.0.0.1:5672/ (``--url`` or
AMQP_WORKER_BENCH_URL) and deletes what it declared, after a failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def _child_simple(jobs: int) -> float:
    from amqp_worker import Job, SimpleWorker

    worker = SimpleWorker(max_concurrency=25, loop_stall_warn_s=0)
    done = asyncio.Event()
    count = 0

    async def noop(args: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    worker.register("noop", noop)
    for _ in range(jobs):
        await worker.perform(Job(handler="noop", queue="bench"))
    started = time.perf_counter()
    async with worker:
        await done.wait()
        return jobs / (time.perf_counter() - started)


async def _child_amqp(jobs: int, url: str, name: str) -> float:
    from amqp_worker import AMQPWorker, Job
    from amqp_worker.testing import delete_topology

    queue = f"q{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(url, name=name, queues=[queue], max_concurrency=25, loop_stall_warn_s=0)
    done = asyncio.Event()
    times: list[float] = []

    async def noop(args: dict[str, Any]) -> None:
        times.append(time.perf_counter())
        if len(times) == jobs:
            done.set()

    worker.register("noop", noop)
    try:
        await worker.perform_many(Job(handler="noop", queue=queue) for _ in range(jobs))
        async with worker:
            await asyncio.wait_for(done.wait(), 600)
    finally:
        await worker.stop()
        await delete_topology(worker)
    return (jobs - 1) / (times[-1] - times[0])


def _consume(src: Path, kind: str, jobs: int, url: str, name: str) -> float:
    """Jobs/s of one consume in a subprocess that imports amqp_worker from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [sys.executable, __file__, "--child", kind, "--jobs", str(jobs)]
    args += ["--url", url, "--name", name]
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True, timeout=900)
    return float(out.stdout.strip().splitlines()[-1])


def _gate_cost_us() -> float:
    """Microseconds per job the book adds: begin, the gate's lookup, end."""
    from amqp_worker._core.cancels import CancelBook

    book = CancelBook()
    for n in range(1000):
        book.add(f"cancelled-{n}")
    job_id = str(uuid.uuid4())

    def one() -> None:
        attempt = book.begin(job_id)
        _ = job_id in book
        book.end(attempt)

    runs = 200_000
    return min(timeit.repeat(one, number=runs, repeat=5)) / runs * 1e6


async def _listener(url: str, name: str, cancels: int) -> dict[str, float]:
    """start() with the sync marker; cancels/s published; cancels/s the listener reads."""
    from amqp_worker import AMQPWorker
    from amqp_worker.testing import delete_topology

    queue = f"q{uuid.uuid4().hex[:8]}"
    worker = AMQPWorker(url, name=name, queues=[queue], loop_stall_warn_s=0)
    publisher = AMQPWorker(url, name=name, queues=[queue])
    try:
        await publisher.cancel("warm-up")  # declares the stream: not part of start()
        started = time.perf_counter()
        await worker.start()
        start_s = time.perf_counter() - started
        ids = [f"c-{n}-{uuid.uuid4().hex[:8]}" for n in range(cancels)]
        sent = time.perf_counter()
        await publisher.cancel(*ids)
        publish_s = time.perf_counter() - sent
        book = worker._cancels
        while not all(i in book for i in ids):  # noqa: ASYNC110 - the book sets no event
            await asyncio.sleep(0.005)
        read_s = time.perf_counter() - sent
    finally:
        await publisher.stop()
        await worker.stop()
        await delete_topology(worker)
    return {
        "start_ms": round(start_s * 1000, 1),
        "cancels_published_per_s": round(cancels / publish_s),
        "cancels_read_per_s": round(cancels / read_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--cancels", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="3bd6bb6")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=["simple", "amqp"])
    parser.add_argument("--name", default="")
    args = parser.parse_args()
    if args.child == "simple":
        print(asyncio.run(_child_simple(args.jobs)))
        return
    if args.child == "amqp":
        print(asyncio.run(_child_amqp(args.jobs, args.url, args.name)))
        return
    name = f"awbench-cancel-{uuid.uuid4().hex[:8]}"
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as base:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "src"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", base], input=archive.stdout, check=True)
        trees = {"baseline": Path(base) / "src", "cancel": ROOT / "src"}
        for _ in range(args.rounds):
            for kind in ("simple", "amqp"):
                for label, src in trees.items():  # alternating: drift hits both alike
                    rate = _consume(src, kind, args.jobs, args.url, name)
                    rates.setdefault(f"{kind} {label}", []).append(rate)
    sys.path.insert(0, str(ROOT / "src"))
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "baseline": args.baseline,
        "median_jobs_per_s": {k: round(statistics.median(v)) for k, v in rates.items()},
        "all_jobs_per_s": {k: [round(r) for r in v] for k, v in rates.items()},
        "gate_us_per_job": round(_gate_cost_us(), 3),
        "listener": asyncio.run(_listener(args.url, name, args.cancels)),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
