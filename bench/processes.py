"""CPU-bound jobs through ``amqp-worker run --processes N``: throughput for each N, same run.

Each round, for each process count: a fresh queue is filled with ``--jobs`` jobs
whose handler busies the CPU for ``--spin-ms`` of pure Python; then
``amqp-worker run bench._cpu_worker:worker --processes N -c 1`` drains it. The
time runs from the first job finished to the last (the children's start-up is
left out); the rate is jobs/s over that span. Every job must finish exactly
once or the round fails. ``vs 1 process`` is the ratio of the medians.

    python3 bench/processes.py                       # 2,000 jobs of 2 ms, 1 and 2 processes, 3 rounds
    python3 bench/processes.py --processes 1 2 4 --jobs 5000 --json

It needs a RabbitMQ at amqp://guest:guest@127.0.0.1:5672/ (``--url`` or
AMQP_WORKER_BENCH_URL) and deletes what each round declared, after a failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _shared import describe, environment

from amqp_worker import AMQPWorker, Job
from amqp_worker.testing import delete_topology

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")


def finished(out: Path) -> list[float]:
    """Every finish time the children wrote so far."""
    times: list[float] = []
    for path in out.iterdir():
        times.extend(float(line) for line in path.read_text().split())
    return times


async def one_run(url: str, processes: int, jobs: int, spin_ms: float) -> dict[str, Any]:
    """Fill a queue with ``jobs`` jobs, drain it with ``processes`` children; the figures."""
    name = f"awbench-{uuid.uuid4().hex[:8]}"
    publisher = AMQPWorker(url, name=name, queues=["cpu"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        daemon: asyncio.subprocess.Process | None = None
        try:
            await publisher.perform_many(
                Job(queue="cpu", handler="spin", args={"ms": spin_ms, "i": i}) for i in range(jobs)
            )
            env = {
                **os.environ,
                "AMQP_WORKER_URL": url,
                "AMQP_WORKER_NAME": name,
                "AMQP_WORKER_QUEUES": "cpu",
                "AW_BENCH_OUT": tmp,
                "PYTHONPATH": str(ROOT),
            }
            cpu_before = os.times()
            daemon = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "amqp_worker.cli", "run", "bench._cpu_worker:worker"),
                *("--processes", str(processes), "-c", "1", "--log-level", "WARNING"),
                env=env,
                cwd=ROOT,
            )
            deadline = time.monotonic() + 60 + jobs * spin_ms / 1000 * 3
            while len(times := finished(out)) < jobs:
                if daemon.returncode is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"{len(times)} of {jobs} jobs ran (daemon {daemon.returncode})"
                    )
                await asyncio.sleep(0.1)
            daemon.send_signal(signal.SIGTERM)
            if await daemon.wait() != 0:
                raise SystemExit(f"the daemon exited {daemon.returncode}")
            cpu_after = os.times()
            times = finished(out)
            if len(times) != jobs:
                raise SystemExit(f"{len(times)} runs of {jobs} jobs: not exactly once")
            span_s = max(times) - min(times)
            children_cpu_s = (cpu_after.children_user + cpu_after.children_system) - (
                cpu_before.children_user + cpu_before.children_system
            )
            return {
                "processes": processes,
                "jobs": jobs,
                "span_s": round(span_s, 3),
                "jobs_per_s": round((jobs - 1) / span_s, 1),
                "cpu_ms_per_job": round(children_cpu_s * 1000 / jobs, 3),
            }
        finally:
            if daemon is not None and daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
            await publisher.stop()
            await delete_topology(publisher)


async def main_async(args: argparse.Namespace) -> int:
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in args.processes}
    for round_no in range(args.rounds):
        for n in args.processes:
            row = await one_run(args.url, n, args.jobs, args.spin_ms)
            rows[n].append(row)
            if not args.json:
                print(
                    f"round {round_no + 1}: {n} process(es): {row['jobs_per_s']} jobs/s", flush=True
                )
    env = await environment(args.url)
    base = statistics.median(r["jobs_per_s"] for r in rows[args.processes[0]])
    table = []
    for n, runs in rows.items():
        median = statistics.median(r["jobs_per_s"] for r in runs)
        table.append(
            {
                "processes": n,
                "jobs_per_s": median,
                "vs_first": round(median / base, 2),
                "cpu_ms_per_job": statistics.median(r["cpu_ms_per_job"] for r in runs),
                "rounds": [r["jobs_per_s"] for r in runs],
            }
        )
    if args.json:
        print(json.dumps({"environment": env, "spin_ms": args.spin_ms, "table": table}, indent=2))
        return 0
    print(f"\n{args.jobs} jobs of {args.spin_ms} ms pure Python, -c 1, median of {args.rounds}")
    print(describe(env))
    print(f"\n| processes | jobs/s | vs {args.processes[0]} | CPU ms/job (children) | rounds |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for row in table:
        rounds = ", ".join(f"{r:,.0f}" for r in row["rounds"])
        print(
            f"| {row['processes']} | {row['jobs_per_s']:,.0f} | {row['vs_first']:.2f} "
            f"| {row['cpu_ms_per_job']:.2f} | {rounds} |"
        )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--spin-ms", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
