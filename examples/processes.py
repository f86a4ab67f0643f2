"""CPU-bound jobs on every core: ``amqp-worker run --processes``.

A handler that computes in pure Python holds the GIL, so one process runs one
of them at a time however high ``-c`` is. Run the worker in several processes:

    export AMQP_WORKER_URL=amqp://guest:guest@127.0.0.1:5672/
    amqp-worker run examples.processes:worker --processes auto -c 1 --max-jobs-per-child 10000

Or run this file: it enqueues 20 reports, starts that daemon with two
processes, prints which process rendered each report, and stops it with SIGTERM.

    python examples/processes.py --jobs 20
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import sys

from pydantic import BaseModel

from amqp_worker import AMQPWorker

logger = logging.getLogger("examples.processes")

worker = AMQPWorker(queues=["reports"])


class Report(BaseModel):
    number: int
    rounds: int = 20_000


@worker.handler("render_report")
def render_report(report: Report) -> None:
    """Pure-Python work: it runs on a handler thread, in whichever child took the job."""
    digest = str(report.number).encode()
    for _ in range(report.rounds):
        digest = hashlib.sha256(digest).digest()
    logger.warning("rendered report %d in pid %d: %s", report.number, os.getpid(), digest.hex()[:8])


async def main(jobs: int) -> None:
    await asyncio.gather(*(render_report.perform(Report(number=n)) for n in range(jobs)))
    await worker.stop()  # the publishing connection; the daemon below consumes
    daemon = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "amqp_worker.cli", "run", "examples.processes:worker"),
        *("--processes", "2", "-c", "1"),
        stderr=asyncio.subprocess.PIPE,
    )
    assert daemon.stderr is not None
    pids: set[str] = set()
    rendered = 0
    while rendered < jobs:
        line = (await daemon.stderr.readline()).decode()
        if not line:
            raise SystemExit(f"the daemon exited early ({await daemon.wait()})")
        if "rendered report" in line:
            rendered += 1
            pids.add(line.rsplit(" in pid ", 1)[1].split(":")[0])
    daemon.send_signal(signal.SIGTERM)
    await daemon.communicate()
    print(f"{rendered} reports rendered by {len(pids)} processes; daemon exit {daemon.returncode}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    asyncio.run(main(parser.parse_args().jobs))
