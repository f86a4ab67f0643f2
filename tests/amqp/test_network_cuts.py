"""Network cuts between a worker and RabbitMQ, through the fault proxy of tests/harness/tcp_proxy.py.

One AMQPWorker consumes and publishes (through the proxy) 3,000 jobs —
immediate, delayed, and failing once then retried — while the proxy resets
every connection 10 times at random moments, with publishes, handlers and
acks in flight, and once holds the connection silent for longer than the
heartbeat. What must hold: every job whose perform returned runs; a perform
that raised is reported; duplicates stay within the prefetch per cut; no stale
delivery tag and no traceback reaches the log at ERROR; the worker consumes
again within 10 s of each cut; and the password never shows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from amqp_worker import Job, RetryPolicy
from amqp_worker._rabbitmq import client_logs
from tests.amqp.conftest import Workers
from tests.harness.brokertools import BROKER_URL
from tests.harness.leakwatch import LeakWatch, SecretUser
from tests.harness.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.timeout(150)]

logger = logging.getLogger("tests.network_cuts")

JOBS = 3000
DROPS = 10
# Longer than RabbitMQ takes to give a silent connection up: it checks every heartbeat
# interval and closes after two checks saw nothing, 4 to 6 s after the last byte with a
# 2 s heartbeat (at 5.5 s a hold that began early in an interval ended unnoticed).
HOLD_S = 7.0
HEARTBEAT_S = 2
MAX_CONCURRENCY = 8
PREFETCH = 16
DELAY_PREFETCH = 16
#: What one cut can make run twice: every delivery unacked at the cut (work, due and
#: quarantine channels), and every publish not yet confirmed (each publisher's perform
#: and each handler slot's retry re-publish), which is published again after the cut.
PUBLISHERS = 8
CUT_BOUND = PREFETCH + DELAY_PREFETCH + 1 + PUBLISHERS + MAX_CONCURRENCY
RESUME_BOUND_S = 10.0


class ClientErrors(logging.Filter):
    """Counts aio-pika's and aiormq's records at ERROR as they are logged (before any filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += record.levelno >= logging.ERROR
        return True


class ErrorRecords(logging.Handler):
    """Keeps every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Formatted now: aio-pika's arguments may not have a repr any more later on.
        record.message = record.getMessage()
        record.msg, record.args = record.message, None
        self.records.append(record)


def _deliberate(record: logging.LogRecord) -> bool:
    """The worker's own report of the handler failing on purpose (attempt 0 of 'flaky')."""
    return record.name == "amqp_worker" and "handler=flaky " in record.getMessage()


async def test_a_worker_survives_network_cuts_with_jobs_in_flight(
    workers: Workers, secret_user: SecretUser, leak_watch: LeakWatch
) -> None:
    rng = random.Random()
    broker = urlsplit(BROKER_URL)
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    # Added before the worker installs its own filter on these loggers, so it runs first.
    raw = ClientErrors()
    for name in client_logs.LOGGERS:
        logging.getLogger(name).addFilter(raw)
    proxy = await TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()
    worker = workers(
        url=secret_user.url(port=proxy.port),
        heartbeat_s=HEARTBEAT_S,
        reconnect_interval_s=0.2,
        publish_timeout_s=30,
        max_concurrency=MAX_CONCURRENCY,
        prefetch=PREFETCH,
        delay_prefetch=DELAY_PREFETCH,
        retry=RetryPolicy(max_retries=2, base_s=0.2, jitter=0),
    )
    leak_watch.see(worker, worker.settings)
    queue = worker.settings.queues[0]

    # (job id, attempt) -> start times of its handler runs; and every run as
    # (start time, connections the proxy had accepted by then).
    runs: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    timeline: list[tuple[float, int]] = []
    in_handler = 0

    async def handle(args: dict[str, Any], job: Job) -> None:
        nonlocal in_handler
        now = time.monotonic()
        runs[(job.id, job.attempt)].append(now)
        timeline.append((now, proxy.accepted))
        in_handler += 1
        try:
            await asyncio.sleep(rng.uniform(0, 0.004))
            if args.get("fail") and job.attempt == 0:
                raise RuntimeError("failing on the first attempt, on purpose")
        finally:
            in_handler -= 1

    worker.register("steady", handle)
    worker.register("flaky", handle)

    # 3,000 jobs: immediate, delayed (perform_in, up to 1.5 s), failing once then retried.
    plan: list[tuple[Job, float]] = []
    for n in range(JOBS):
        kind = n % 6
        if kind == 4:
            plan.append((Job(handler="steady", queue=queue, args={"n": n}), rng.uniform(0.05, 1.5)))
        elif kind == 5:
            plan.append((Job(handler="flaky", queue=queue, args={"n": n, "fail": True}), 0.0))
        else:
            plan.append((Job(handler="steady", queue=queue, args={"n": n}), 0.0))
    must_finish = {job.id: job.handler == "flaky" for job, _ in plan}  # id -> flaky
    confirmed: set[str] = set()
    raised: dict[str, BaseException] = {}
    publishing = 0
    todo = collections.deque(plan)

    cutting = asyncio.Event()  # set once the last cut is over

    async def publish() -> None:
        nonlocal publishing
        # Past the plan, keep a trickle of jobs going until the last cut: a cut with
        # no work left could never show the worker consuming again.
        while todo or not cutting.is_set():
            if todo:
                job, delay = todo.popleft()
            else:
                job, delay = Job(handler="steady", queue=queue, args={"extra": True}), 0.0
                must_finish[job.id] = False
            publishing += 1
            try:
                if delay:
                    await worker.perform_in(job, delay)
                else:
                    await worker.perform(job)
            except Exception as exc:  # reported: counted, and its job need not run
                raised[job.id] = exc
                leak_watch.see(exc)
            else:
                confirmed.add(job.id)
            finally:
                publishing -= 1
            await asyncio.sleep(rng.uniform(0, 0.08))  # spread the load over the cuts

    cuts: list[dict[str, Any]] = []

    async def resumed_after(cut_at: float, accepted_before: int) -> float:
        """Seconds from the cut to the first handler run on a connection made after it."""
        deadline = cut_at + 60
        while time.monotonic() < deadline:
            after = [t for t, accepted in timeline if t >= cut_at and accepted > accepted_before]
            if after:
                return min(after) - cut_at
            await asyncio.sleep(0.02)
        return float("inf")

    async def moment(busy: Any) -> None:
        """Wait until ``busy()`` (up to 2 s): a cut mid-ack or mid-publish, not in a lull."""
        deadline = time.monotonic() + 2
        while not busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    async def cut_repeatedly() -> None:
        try:
            hold_after = rng.randrange(2, DROPS - 1)
            for n in range(DROPS + 1):
                await asyncio.sleep(rng.uniform(0.4, 2.0))
                # Alternately while a handler runs (its ack follows) and while a perform waits.
                await moment((lambda: in_handler) if n % 2 else (lambda: publishing))
                assert client_logs.installed()
                cut_at, accepted_before = time.monotonic(), proxy.accepted
                flight = {"publishing": publishing, "in_handler": in_handler}
                if n == hold_after:
                    # The broker gives the silent connection up; the client learns it after.
                    held = await proxy.hold(HOLD_S)
                    kind = "hold"
                else:
                    held = await proxy.drop_all()
                    kind = "drop"
                resume = await resumed_after(cut_at, accepted_before)
                cuts.append(
                    {"kind": kind, "at": cut_at, "conns": held, "resume_s": resume, **flight}
                )
                logger.info("cut %d (%s): %s", n + 1, kind, cuts[-1])
        finally:
            cutting.set()

    try:
        await worker.start()
        cutter = asyncio.create_task(cut_repeatedly())
        try:
            await asyncio.gather(*(publish() for _ in range(PUBLISHERS)))
        finally:
            cutting.set()  # a failed publisher must not leave the others trickling on
        await cutter
        # Everything confirmed must run (flaky ones twice: the retry is what counts).
        wanted = {(job_id, 1 if flaky else 0) for job_id, flaky in must_finish.items()}
        wanted = {key for key in wanted if key[0] in confirmed}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not wanted <= runs.keys():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    finally:
        await worker.stop()
        await proxy.close()
        logging.getLogger().removeHandler(errors)
        for name in client_logs.LOGGERS:
            logging.getLogger(name).removeFilter(raw)
    leak_watch.see(worker, worker.settings)
    assert not client_logs.installed()  # stop() took the log filter off again

    lost = sorted(key for key in wanted if key not in runs)
    extra_runs = [(times[0], times[1:]) for times in runs.values() if len(times) > 1]
    duplicates = sum(len(later) for _, later in extra_runs)
    # Each duplicate run is charged to the last cut before it.
    per_cut = collections.Counter(
        max((i for i, cut in enumerate(cuts) if cut["at"] <= t), default=-1)
        for _, later in extra_runs
        for t in later
    )
    max_resume = max(cut["resume_s"] for cut in cuts)
    loud = [r for r in errors.records if not _deliberate(r)]
    client_errors = [r for r in loud if r.name.startswith(("aio_pika", "aiormq"))]
    figures = {
        "jobs": len(must_finish),
        "confirmed": len(confirmed),
        "raised": len(raised),
        "cuts": len(cuts),
        "duplicates": duplicates,
        "max_duplicates_per_cut": max(per_cut.values(), default=0),
        "max_resume_s": round(max_resume, 2),
        "lost": len(lost),
        "client_errors_logged": raw.count,  # before the worker's filter
        "error_records": len(loud),  # what reached the log at ERROR
        "client_error_records": len(client_errors),
    }
    logger.info("network cuts: %s", figures)
    print(f"network cuts: {figures}")
    for cut in cuts:
        print(f"  {cut}")
    print(f"  duplicates per cut: {dict(per_cut)}")
    for record in loud[:40]:
        print(f"  {record.levelname} {record.name}: {record.getMessage()[:300]}")
    assert len(cuts) == DROPS + 1
    assert any(cut["publishing"] for cut in cuts), "no cut came while publishes were in flight"
    assert any(cut["in_handler"] for cut in cuts), "no cut came while handlers were running"
    assert len(confirmed) + len(raised) == len(must_finish) >= JOBS
    assert not lost, f"{len(lost)} confirmed job(s) never ran, e.g. {lost[:3]}"
    assert -1 not in per_cut, "a job ran twice before any cut"
    assert max(per_cut.values(), default=0) <= CUT_BOUND, per_cut
    assert max_resume <= RESUME_BOUND_S, cuts
    stale_tags = [r for r in errors.records if "delivery tag" in r.getMessage()]
    assert not stale_tags, stale_tags[0].getMessage()
    tracebacks = [r for r in loud if r.exc_info]
    assert not tracebacks, [f"{r.name}: {r.getMessage()}" for r in tracebacks[:5]]
    assert not loud, [f"{r.name}: {r.getMessage()}" for r in loud[:5]]
