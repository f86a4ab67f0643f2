"""Soak: many jobs of every kind through one worker; memory, tasks, channels and threads stay flat.

The mix, by job number: 80% succeed, 10% fail once and succeed on their retry
(through the delay topology), 5% are delayed 1-5 s with ``perform_in``, 5% are
parked (:class:`~amqp_worker.errors.PermanentError`). A publish-only worker
enqueues them in batches while one worker runs them. Then:

- RSS grows less than 10 MB between the 10% mark and the last job;
- asyncio tasks and threads after ``stop()`` are those from before ``start()``;
  the open channels of both connections are as many at the end as at the 10% mark;
- every job is accounted for: each one that should succeed succeeded exactly
  once, each one that should be parked was parked once, and the work, due,
  quarantine and delay queues are empty.

CI runs 10,000 jobs. The full soak runs 100,000; ``-s`` prints its figures::

    AMQP_WORKER_SOAK_JOBS=100000 python3 -m pytest -q -s tests/amqp/test_soak.py
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from _pytest.logging import LogCaptureHandler

from amqp_worker import AMQPWorker, Job, JobEvent, PermanentError, RetryPolicy
from amqp_worker._rabbitmq.topology import DELAY_RADIX, Topology
from tests.harness.brokertools import BROKER_URL, delete_topology
from tests.harness.leakwatch import LeakWatch, SecretUser, _Keep

JOBS = int(os.environ.get("AMQP_WORKER_SOAK_JOBS", "10000"))

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60 + JOBS // 25)]

#: RSS may grow by less than this between the 10% mark and the last job.
MAX_GROWTH_BYTES = 10 * 1024 * 1024
#: Jobs published but not yet finished, at most: the broker's queues stay short.
OUTSTANDING = 4000
BATCH = 500
#: Fail if no job finishes for this long.
STALL_S = 30.0
#: Time for tasks and threads to end after stop() (a pool thread exits on its own).
SETTLE_S = 5.0
#: The retry of a job that fails once: through the delay topology, quickly.
QUICK_RETRY = RetryPolicy(max_retries=1, base_s=0.2, jitter=0.0)


def kind_of(number: int) -> str:
    """The handler of job ``number``: 16 of each 20 succeed, 2 fail once, 1 is delayed, 1 parks."""
    slot = number % 20
    if slot < 16:
        return "ok"
    return {16: "flaky", 17: "flaky", 18: "delayed", 19: "park"}[slot]


def delay_of(number: int) -> float:
    """Between 1 and 5 s, spread over the delayed jobs."""
    return 1.0 + (number * 7919 % 4001) / 1000


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_channels(worker: AMQPWorker) -> int:
    """Channels open on the wire of ``worker``'s connection (aiormq's table of them)."""
    connection: Any = worker._broker.connection
    assert connection is not None
    assert connection.transport is not None
    return len(connection.transport.connection.channels)


@dataclass
class Tally:
    """What happened to each job, in arrays sized up front so keeping count never allocates."""

    jobs: int
    ran: bytearray = field(init=False)
    parked: bytearray = field(init=False)
    due: array.array[float] = field(init=False)
    failed_once: int = 0
    finished: int = 0
    early: int = 0

    def __post_init__(self) -> None:
        self.ran = bytearray(self.jobs)
        self.parked = bytearray(self.jobs)
        self.due = array.array("d", bytes(8 * self.jobs))

    def after(self, event: JobEvent) -> None:
        number = number_of(event.job)
        if event.handler == "delayed" and time.time() < self.due[number]:
            self.early += 1
        self.ran[number] += 1
        self.finished += 1

    def on_failure(self, event: JobEvent) -> None:
        if event.retry_in_s is not None:
            self.failed_once += 1

    def on_parked(self, event: JobEvent) -> None:
        number = number_of(event.job)
        self.parked[number] += 1
        self.finished += 1


class _Scan(_Keep):
    """Searches each record for the password as it is logged; keeps only records that hold it.

    Keeping 100,000 records would be the soak's own memory growth.
    """

    def __init__(self, texts: list[str], password: str) -> None:
        super().__init__(texts)
        self.password = password
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        before = len(self.texts)
        super().emit(record)
        self.texts[before:] = [text for text in self.texts[before:] if self.password in text]


@pytest.fixture
def soak_watch(secret_user: SecretUser, capfd: pytest.CaptureFixture[str]) -> Iterator[_Scan]:
    """``leak_watch`` for a soak: every record down to INFO is searched for the password.

    Not DEBUG: aio-pika's and aiormq's frame logs, about nine records a job, would
    halve the soak's speed.
    """
    watch = LeakWatch(secret_user.password)
    root = logging.getLogger()
    scan = _Scan(watch.texts, secret_user.password)
    old_level = root.level
    root.addHandler(scan)
    root.setLevel(logging.INFO)
    try:
        yield scan
    finally:
        root.removeHandler(scan)
        root.setLevel(old_level)
        out, err = capfd.readouterr()
        watch.texts += [out, err]
        watch.check()


@contextlib.contextmanager
def without_pytest_log_capture() -> Iterator[None]:
    """Detach pytest's capture handlers, which keep every record for the report.

    They are attached when the test's call phase begins (after its fixtures), so
    this runs inside the test. Without it the RSS figures would be pytest's.
    """
    root = logging.getLogger()
    detached = [h for h in root.handlers if isinstance(h, LogCaptureHandler)]
    for handler in detached:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in detached:
            root.addHandler(handler)


async def messages_in(names: list[str]) -> dict[str, int]:
    """Messages in each queue (ready or not: no consumer is left), over one connection."""
    counts: dict[str, int] = {}
    async with await aio_pika.connect(BROKER_URL) as connection:
        for name in names:
            async with connection.channel() as channel:
                declared = await channel.declare_queue(name, passive=True)
                counts[name] = declared.declaration_result.message_count or 0
    return counts


def make_job(queue: str, number: int) -> Job:
    return Job(handler=kind_of(number), queue=queue, id=f"soak-{number}", args={"i": number})


def number_of(job: Job | None) -> int:
    assert job is not None
    number = job.args["i"]
    assert isinstance(number, int)
    return number


async def test_a_soak_of_jobs_of_every_kind_leaks_nothing_and_loses_nothing(
    secret_user: SecretUser, soak_watch: _Scan
) -> None:
    token = uuid.uuid4().hex[:8]
    name = f"awsoak-{token}"
    # A job queue's name is not namespaced by the worker name: a fixed one would be
    # shared with a soak running at the same time on the same broker.
    queue = f"soak-{token}"
    topology = Topology(name=name)
    options: dict[str, Any] = {"name": name, "queues": [queue], "publish_timeout_s": 30}
    worker = AMQPWorker(secret_user.url(), **options)
    publisher = AMQPWorker(secret_user.url(), **options)
    tally = Tally(JOBS)

    async def ok(args: dict[str, Any]) -> None:
        pass

    def flaky(args: dict[str, Any], job: Job) -> None:  # sync: runs on the worker's threads
        if job.attempt == 0:
            raise RuntimeError("fails once")

    async def park(args: dict[str, Any]) -> None:
        raise PermanentError("parked on purpose")

    worker.register("ok", ok)
    worker.register("delayed", ok)
    worker.register("flaky", flaky, retry=QUICK_RETRY)
    worker.register("park", park)
    worker.hooks.after(tally.after)
    worker.hooks.on_failure(tally.on_failure)
    worker.hooks.on_parked(tally.on_parked)

    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    mark = JOBS // 10
    figures: dict[str, Any] = {}
    last_progress = (0, time.monotonic())

    def progress() -> None:
        """Take the 10% figures once; fail if no job finished for STALL_S."""
        nonlocal last_progress
        if "rss_mark" not in figures and tally.finished >= mark:
            figures["rss_mark"] = rss_bytes()
            figures["channels_mark"] = (open_channels(worker), open_channels(publisher))
        if tally.finished != last_progress[0]:
            last_progress = (tally.finished, time.monotonic())
        assert time.monotonic() - last_progress[1] < STALL_S, (
            f"no job finished for {STALL_S:g}s: {tally.finished} of {JOBS} finished"
        )

    async def soak() -> None:
        published = 0
        while published < JOBS:
            while published - tally.finished >= OUTSTANDING:
                progress()
                await asyncio.sleep(0.02)
            batch = [make_job(queue, n) for n in range(published, min(published + BATCH, JOBS))]
            await publisher.perform_many(job for job in batch if job.handler != "delayed")
            later = [number_of(job) for job in batch if job.handler == "delayed"]
            for number in later:
                tally.due[number] = time.time() + delay_of(number)
            await asyncio.gather(
                *(publisher.perform_in(batch[n - published], delay_of(n)) for n in later)
            )
            published += len(batch)
            progress()
        while tally.finished < JOBS:
            progress()
            await asyncio.sleep(0.02)

    started = time.monotonic()
    try:
        try:
            with without_pytest_log_capture():
                await worker.start()
                await soak()
            finished = time.monotonic()
            figures["rss_end"] = rss_bytes()
            figures["channels_end"] = (open_channels(worker), open_channels(publisher))
        finally:
            await publisher.stop()
            await worker.stop()
        # Tasks and threads as before start(), once stop()'s leftovers have ended.
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            extra_tasks = asyncio.all_tasks() - tasks_before
            extra_threads = set(threading.enumerate()) - threads_before
            if not extra_tasks and not extra_threads:
                break
            await asyncio.sleep(0.05)
        figures["tasks_after"] = len(asyncio.all_tasks())
        figures["threads_after"] = threading.active_count()
        left = await messages_in(
            [
                topology.work_queue(queue),
                topology.due_queue(queue),
                topology.quarantine_queue(queue),
                *(
                    topology.delay_queue(level, digit)
                    for level in range(topology.delay.levels)
                    for digit in range(1, DELAY_RADIX)
                ),
            ]
        )
        [parked] = (await messages_in([topology.failed_queue(queue)])).values()
    finally:
        await delete_topology(topology, [queue])

    growth = figures["rss_end"] - figures["rss_mark"]
    wall = finished - started
    print(
        f"\nsoak of {JOBS} jobs: {wall:.1f}s, {JOBS / wall:.0f} jobs/s; "
        f"RSS {figures['rss_mark'] / 2**20:.1f} MiB at job {mark}, "
        f"{figures['rss_end'] / 2**20:.1f} MiB at job {JOBS}, growth {growth / 2**20:+.2f} MiB; "
        f"tasks {len(tasks_before)} before start, {figures['tasks_after']} after stop; "
        f"threads {len(threads_before)} before, {figures['threads_after']} after; "
        f"channels (worker, publisher) {figures['channels_mark']} at job {mark}, "
        f"{figures['channels_end']} at the end; {soak_watch.records} log records searched"
    )

    expect_ran = [n for n in range(JOBS) if kind_of(n) != "park"]
    expect_parked = [n for n in range(JOBS) if kind_of(n) == "park"]
    assert [n for n in expect_ran if tally.ran[n] != 1] == []
    assert [n for n in expect_parked if tally.parked[n] != 1 or tally.ran[n]] == []
    assert tally.failed_once == sum(kind_of(n) == "flaky" for n in range(JOBS))
    assert tally.early == 0
    assert parked == len(expect_parked)
    assert {name: count for name, count in left.items() if count} == {}

    assert growth < MAX_GROWTH_BYTES
    assert not extra_tasks, f"tasks left after stop: {extra_tasks}"
    assert not extra_threads, f"threads left after stop: {extra_threads}"
    assert figures["channels_end"] == figures["channels_mark"]
    assert worker._broker.connection is None
    assert publisher._broker.connection is None
