"""Cancel across processes: worker processes on one queue, cancels sent from this one.

Each worker is a subprocess (tests/amqp/cancel_worker.py) that logs what it
ran to a shared file. Waits poll with generous guards; nothing asserts on
elapsed time.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amqp_worker import FailureReason, Job
from tests.amqp.conftest import NAME, Workers
from tests.harness.brokertools import BROKER_URL

pytestmark = [pytest.mark.broker]

GUARD_S = 60.0


class Fleet:
    """Worker subprocesses on one queue, and the file they log their runs to."""

    def __init__(self, queue: str, tmp_path: Path) -> None:
        self.queue = queue
        self.runs = tmp_path / "runs.log"
        self.runs.touch()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = tmp_path

    def start(self, count: int = 1) -> None:
        """Start ``count`` more workers; return once each has started (caught up with cancels)."""
        for _ in range(count):
            log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
            args = [BROKER_URL, NAME, self.queue, str(self.runs)]
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.amqp.cancel_worker", *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            log.close()
        self.wait_for(
            lambda lines: sum(line.startswith("ready") for line in lines) == len(self.procs)
        )

    def lines(self) -> list[str]:
        return self.runs.read_text().splitlines()

    def wait_for(self, done: Callable[[list[str]], bool]) -> list[str]:
        deadline = time.monotonic() + GUARD_S
        while True:
            lines = self.lines()
            if done(lines):
                return lines
            for n, proc in enumerate(self.procs):
                log = (self.logs / f"worker-{n}.log").read_text()
                assert proc.poll() is None, f"worker {n} exited {proc.returncode}:\n{log}"
            assert time.monotonic() < deadline, f"gave up waiting; runs so far: {lines[-20:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def fleet(workers: Workers, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(workers.queue, tmp_path)
    try:
        yield made
    finally:
        made.stop()


async def parked_ids(workers: Workers, want: int) -> dict[str, FailureReason]:
    """Poll the failed-jobs queue until it holds ``want`` jobs; id -> reason."""
    reader = workers()

    async def poll() -> dict[str, FailureReason]:
        while True:
            found = {job.id: job.reason for job in await reader.failed.list()}
            if len(found) >= want:
                return found
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), GUARD_S)


@pytest.mark.timeout(180)
async def test_three_workers_run_none_of_100_cancelled_delayed_jobs(
    workers: Workers, fleet: Fleet
) -> None:
    await asyncio.to_thread(fleet.start, 3)
    publisher = workers()
    doomed = [Job(handler="mark", queue=workers.queue) for _ in range(100)]
    kept = [Job(handler="mark", queue=workers.queue) for _ in range(100)]
    delay_s = 8.0
    due = time.monotonic() + delay_s
    for job in [*doomed, *kept]:
        await publisher.perform_in(job, delay_s)
    await publisher.cancel(*(job.id for job in doomed))
    # A precondition, not the result: the cancels must be confirmed before the jobs are due.
    assert time.monotonic() < due, "this machine is too slow for the test's delay"
    kept_ids = {job.id for job in kept}
    lines = await asyncio.to_thread(
        fleet.wait_for,
        lambda lines: kept_ids <= {line.split()[1] for line in lines if line.startswith("ran")},
    )
    reasons = await parked_ids(workers, 100)
    ran = [line.split()[1] for line in lines if line.startswith("ran")]
    assert sorted(ran) == sorted(kept_ids)  # each kept job exactly once, no cancelled one
    assert reasons == {job.id: FailureReason.CANCELLED for job in doomed}


@pytest.mark.timeout(120)
async def test_a_worker_started_after_the_cancel_does_not_run_the_job(
    workers: Workers, fleet: Fleet
) -> None:
    publisher = workers()
    doomed, kept = (
        Job(handler="mark", queue=workers.queue),
        Job(handler="mark", queue=workers.queue),
    )
    await publisher.perform(doomed)
    await publisher.cancel(doomed.id)
    await publisher.perform(kept)
    await asyncio.to_thread(fleet.start)
    lines = await asyncio.to_thread(fleet.wait_for, lambda lines: f"ran {kept.id}" in lines)
    reasons = await parked_ids(workers, 1)
    assert reasons == {doomed.id: FailureReason.CANCELLED}
    assert f"ran {doomed.id}" not in lines


@pytest.mark.timeout(120)
async def test_a_cancel_from_another_process_stops_a_running_job(
    workers: Workers, fleet: Fleet
) -> None:
    await asyncio.to_thread(fleet.start, 2)
    publisher = workers()  # publishes and cancels; consumes nothing
    job = Job(handler="hold", queue=workers.queue)
    await publisher.perform(job)
    await asyncio.to_thread(fleet.wait_for, lambda lines: f"started {job.id}" in lines)
    await publisher.cancel(job.id)
    await asyncio.to_thread(fleet.wait_for, lambda lines: f"interrupted {job.id}" in lines)
    reasons = await parked_ids(workers, 1)
    assert reasons == {job.id: FailureReason.CANCELLED}
