"""Delayed jobs on AMQPWorker: lateness, worker memory, and the delay topology's size.

Usage::

    python3 bench/delay.py              # 1,000 jobs + one 60 s job, 10,000 pending; ~2 minutes
    python3 bench/delay.py --quick      # 100 jobs + one 20 s job, 1,000 pending
    python3 bench/delay.py --json

The exit status is the verdict: 0 when every target in TARGETS is met, 1 when
any is missed (stderr names each one), 130 on Ctrl-C.

The consumer runs in a process of its own (``bench/_delay_worker.py``), so its RSS
can be read from ``/proc/<pid>/status``; this process publishes. Everything lives
under a fresh ``awbench-delay-<hex>`` name, and is deleted at the end, also after a
failure or Ctrl-C. See ``bench/README.md`` for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from _shared import delete_all, describe, environment, on_each
from aio_pika.abc import AbstractChannel

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.topology import DelayPlan, Topology

DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
WORKER_SCRIPT = Path(__file__).with_name("_delay_worker.py")
HANDLER = "record"
#: Concurrent perform_in calls when enqueueing the memory and delay-queue batches.
BATCH = 256
#: The worker reports event-loop wake-ups later than this (its stall monitor).
STALL_MS = 3.0
#: A job this late (ms) is explained in the report: which stage, which stall.
LATE_MS = 5.0
#: Give up on a wait that has not finished by then (beyond the delays themselves).
SLACK_S = 60.0

#: (key, label, target, unit). Lower is better for every one of them.
TARGETS: list[tuple[str, str, float, str]] = [
    ("p99_ms", "lateness p99", 5, "ms"),
    ("max_ms", "lateness max", 25, "ms"),
    ("long_job_ms", "long job lateness", 25, "ms"),
    ("early", "ran early", 0, "jobs"),
    ("rss_growth_mb", "RSS growth", 1, "MB"),
    ("delay_queues", "delay queues", 64, ""),
]
#: Celery 5.7's figures for the same test, for reference.
CELERY = {
    "p99_ms": 2,
    "max_ms": 19,
    "long_job_ms": 19,
    "rss_growth_mb": 0,
    "publish_per_s": 1500,
}


# -- broker names and cleanup ----------------------------------------------------------


@dataclass
class Names:
    """The worker name and job queue of one run; everything else derives from them."""

    name: str = field(default_factory=lambda: f"awbench-delay-{uuid.uuid4().hex[:12]}")
    window_ms: int = 1000

    @property
    def queue(self) -> str:
        """``Job.queue``: unique, so the work queue (the same name) is too."""
        return f"{self.name}.jobs"

    @property
    def topology(self) -> Topology:
        return Topology(name=self.name, delay=DelayPlan(self.window_ms))

    def delay_queues(self) -> list[str]:
        return self.topology.delay_queues()

    def delay_exchanges(self) -> list[str]:
        t = self.topology
        return [t.delay_exchange(level) for level in range(t.delay.levels)]

    def queues(self) -> list[str]:
        t = self.topology
        return [
            t.work_queue(self.queue),
            t.due_queue(self.queue),
            t.failed_queue(self.queue),
            t.quarantine_queue(self.queue),
            *self.delay_queues(),
        ]

    def exchanges(self) -> list[str]:
        t = self.topology
        return [t.exchange, t.due_exchange, *self.delay_exchanges()]


async def cleanup(url: str, names: Names) -> None:
    """Delete every queue and exchange the run may have declared."""
    await delete_all(url, names.queues(), names.exchanges())


async def queue_depths(url: str, queues: Iterable[str]) -> dict[str, int | None]:
    """Ready messages per queue, by passive declaration; None for a queue that does not exist."""

    async def depth(channel: AbstractChannel, queue: str) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0

    return await on_each(url, queues, depth)


async def exchanges_exist(url: str, exchanges: Iterable[str]) -> list[str]:
    """Those of ``exchanges`` that exist, by passive declaration."""

    async def exists(channel: AbstractChannel, exchange: str) -> bool:
        await channel.declare_exchange(exchange, passive=True)
        return True

    return [name for name, found in (await on_each(url, exchanges, exists)).items() if found]


async def purge(url: str, queues: Iterable[str]) -> int:
    """Purge the queues that exist; return how many messages were removed."""

    async def purge_one(channel: AbstractChannel, queue: str) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return (await declared.purge()).message_count or 0

    return sum(count or 0 for count in (await on_each(url, queues, purge_one)).values())


async def rabbitmqctl(url: str, *command: str) -> list[list[str]] | None:
    """Rows of ``rabbitmqctl -q <command> --no-table-headers`` on the URL's vhost, or None.

    None when rabbitmqctl is missing, fails, or the broker is not on this host.
    """
    parts = urlsplit(url)
    if parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        return None
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    try:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "-q",
            *command,
            "--no-table-headers",
            "-p",
            vhost,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None
    if process.returncode != 0:
        return None
    return [line.split("\t") for line in out.decode().splitlines() if line.strip()]


# -- the worker process ------------------------------------------------------------------


class WorkerProcess:
    """``_delay_worker.py`` in a subprocess; collects the jobs it reports on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.jobs: list[dict[str, Any]] = []
        self.stalls: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.exited = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, names: Names, args: argparse.Namespace) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER_SCRIPT),
            "--url",
            url,
            "--name",
            names.name,
            "--queue",
            names.queue,
            "--max-concurrency",
            str(args.max_concurrency),
            "--delay-window-ms",
            str(args.delay_window_ms),
            "--handler-ms",
            str(args.handler_ms),
            "--monitor-ms",
            str(args.monitor_ms),
            "--stall-ms",
            str(STALL_MS),
            "--nice",
            str(args.worker_nice),
            *(["--rt"] if args.worker_rt else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own session: Ctrl-C reaches only this process, which stops the worker.
            start_new_session=True,
        )
        worker = cls(process)
        await worker.wait(lambda: worker.ready.is_set(), 60, "the worker to start")
        return worker

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            event = json.loads(line)
            if event["event"] == "job":
                self.jobs.append(event)
            elif event["event"] == "stall":
                self.stalls.append(event)
            elif event["event"] == "control":
                self.controls.append(event)
            elif event["event"] == "ready":
                self.ready.set()
            self.changed.set()
        self.exited = True
        self.changed.set()

    async def wait(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``done()``; fail early if the worker process exits."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if self.exited:
                raise RuntimeError(f"the worker process exited while waiting for {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"gave up after {timeout_s:.0f}s waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def count(self, phase: str) -> int:
        return sum(1 for job in self.jobs if job["args"].get("phase") == phase)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    async def stop(self) -> None:
        """SIGTERM (the worker hands held jobs back), then SIGKILL if it hangs."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


# -- statistics ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; ``values`` sorted."""
    if not values:
        return math.nan
    rank = (len(values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def spread(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "min": round(ordered[0], 3),
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


def stages(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each job's lateness comes from, in ms, from the worker's trace stamps.

    lateness = stamp + (release - due_hdr) + dispatch, where ``stamp`` is how much later
    the library's due time (``aw-due-ms``) is than the publisher's ``due`` arg.
    """
    traced = [job for job in jobs if {"due_hdr", "arrived", "accepted"} <= job["trace"].keys()]
    if not traced:
        return {}

    def ms(pick: Callable[[dict[str, Any]], float]) -> dict[str, float]:
        return spread(pick(job) * 1000 for job in traced)

    return {
        "traced": len(traced),
        "stamp_ms": ms(lambda j: j["trace"]["due_hdr"] - j["args"]["due"]),
        "lead_ms": ms(lambda j: j["trace"]["due_hdr"] - j["trace"]["arrived"]),
        "arrived_late": sum(1 for j in traced if j["trace"]["arrived"] > j["trace"]["due_hdr"]),
        "release_ms": ms(lambda j: j["trace"]["accepted"] - j["trace"]["due_hdr"]),
        "dispatch_ms": ms(lambda j: j["start"] - j["trace"]["accepted"]),
        "rearmed": sum(1 for j in traced if j["trace"].get("schedules", 1) > 2),
        "max_held": max_overlap((j["trace"]["arrived"], j["trace"]["accepted"]) for j in traced),
    }


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """The most ``(start, end)`` spans open at one moment: jobs held at once by the worker."""
    edges = sorted(e for start, end in spans for e in ((start, 1), (end, -1)))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def transit(
    jobs: list[dict[str, Any]], delays: dict[int, float], topology: Topology
) -> dict[str, Any]:
    """How much longer than the delay queues' TTLs each job took to reach the due queue.

    From the publisher's ``due - delay`` (just before perform_in) to arrival, minus the
    TTLs of the queues it went through: the perform_in call up to the broker, plus every
    dead-letter hop. It eats into the lead; more than the lead and the job arrives late.
    """
    extra: list[float] = []
    planned_lead: list[float] = []
    for j in jobs:
        i, trace = j["args"]["i"], j["trace"]
        if i not in delays or "arrived" not in trace:
            continue
        held_ms = topology.delay_route(delays[i] * 1000).broker_delay_ms
        sent = j["args"]["due"] - delays[i]
        extra.append((trace["arrived"] - sent) * 1000 - held_ms)
        planned_lead.append(delays[i] * 1000 - held_ms)
    return {"extra_ms": spread(extra), "planned_lead_ms": spread(planned_lead)}


def stall_cause(stall: dict[str, Any]) -> str:
    """What the worker's loop thread did during a stall: the larger share of the overshoot."""
    if stall["runq_ms"] >= max(stall["cpu_ms"], stall["over_ms"] / 3):
        return "waited for a CPU"
    if stall["cpu_ms"] >= stall["over_ms"] / 3:
        return "loop busy"
    return "slept"


def explain_late(
    jobs: list[dict[str, Any]], stalls: list[dict[str, Any]], publish_end: float
) -> dict[str, Any]:
    """For jobs over LATE_MS: the stage that took the time, and the stall it overlaps."""
    late = [j for j in jobs if (j["start"] - j["args"]["due"]) * 1000 > LATE_MS]
    causes: dict[str, int] = {}
    worst: list[dict[str, Any]] = []
    for j in sorted(late, key=lambda j: j["start"] - j["args"]["due"], reverse=True):
        trace = j["trace"]
        due = trace.get("due_hdr", j["args"]["due"])
        overlapping = [s for s in stalls if s["start"] < j["start"] and s["end"] > due]
        if trace.get("arrived", -math.inf) > due:
            cause = "arrived after its due time"
        elif overlapping:
            cause = stall_cause(max(overlapping, key=lambda s: s["over_ms"]))
        else:
            cause = f"no stall over {STALL_MS:g} ms seen"
        causes[cause] = causes.get(cause, 0) + 1
        if len(worst) < 5:
            worst.append(
                {
                    "i": j["args"]["i"],
                    "late_ms": round((j["start"] - j["args"]["due"]) * 1000, 2),
                    "due_after_publish_s": round(due - publish_end, 3),
                    "lead_ms": round((due - trace["arrived"]) * 1000, 2)
                    if "arrived" in trace
                    else None,
                    "release_ms": round((trace["accepted"] - due) * 1000, 2)
                    if "accepted" in trace
                    else None,
                    "dispatch_ms": round((j["start"] - trace["accepted"]) * 1000, 2)
                    if "accepted" in trace
                    else None,
                    "stalls": [
                        {k: round(s[k], 2) for k in ("over_ms", "cpu_ms", "runq_ms")}
                        for s in overlapping
                    ],
                }
            )
    return {
        "over_ms": LATE_MS,
        "jobs": len(late),
        "due_while_publishing": sum(
            1 for j in late if j["trace"].get("due_hdr", j["args"]["due"]) < publish_end
        ),
        "causes": causes,
        "worst": worst,
    }


def stall_summary(stalls: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """The worker's loop stalls (> STALL_MS) between ``start`` and ``end``, by cause."""
    within = [s for s in stalls if start <= s["start"] <= end]
    by_cause: dict[str, int] = {}
    for s in within:
        by_cause[stall_cause(s)] = by_cause.get(stall_cause(s), 0) + 1
    return {
        "over_ms": STALL_MS,
        "count": len(within),
        "max_ms": round(max((s["over_ms"] for s in within), default=0.0), 2),
        "runq_ms_total": round(sum(s["runq_ms"] for s in within), 1),
        "by_cause": by_cause,
    }


# -- the three runs ------------------------------------------------------------------------


def job(names: Names, phase: str, due: float, i: int) -> Job:
    return Job(handler=HANDLER, queue=names.queue, args={"phase": phase, "due": due, "i": i})


async def perform_in_all(
    publisher: AMQPWorker, names: Names, phase: str, delays: list[float], in_flight: int
) -> float:
    """``perform_in`` every delay, ``in_flight`` calls at a time; seconds taken.

    ``due`` is computed right before each call. ``in_flight=1`` is a plain loop.
    """
    started = time.perf_counter()
    if in_flight == 1:
        for i, delay in enumerate(delays):
            due = time.time() + delay
            await publisher.perform_in(job(names, phase, due, i), delay)
        return time.perf_counter() - started
    slots = asyncio.Semaphore(in_flight)

    async def one(i: int, delay: float) -> None:
        async with slots:
            due = time.time() + delay
            await publisher.perform_in(job(names, phase, due, i), delay)

    await asyncio.gather(*(one(i, delay) for i, delay in enumerate(delays)))
    return time.perf_counter() - started


async def lateness_run(
    publisher: AMQPWorker, worker: WorkerProcess, names: Names, args: argparse.Namespace
) -> dict[str, Any]:
    """One long job, then ``jobs`` jobs due in 1..10 s; lateness = handler start - due."""
    rng = random.Random(args.seed)
    delays = [rng.uniform(1.0, 10.0) for _ in range(args.jobs)]
    run_start = time.time()

    due = time.time() + args.long_s
    started = time.perf_counter()
    await publisher.perform_in(job(names, "lateness", due, -1), args.long_s)
    first_call_s = time.perf_counter() - started

    publish_s = await perform_in_all(publisher, names, "lateness", delays, args.publish_concurrency)
    publish_end = time.time()

    total = args.jobs + 1
    progress(args, f"published; waiting {args.long_s:.0f}s for the long job...")
    await worker.wait(
        lambda: worker.count("lateness") >= total, args.long_s + SLACK_S, f"{total} jobs to run"
    )
    jobs = [j for j in worker.jobs if j["args"].get("phase") == "lateness"]
    late_ms = {j["args"]["i"]: (j["start"] - j["args"]["due"]) * 1000 for j in jobs}
    short = sorted(v for i, v in late_ms.items() if i >= 0)
    early_hdr = sum(1 for j in jobs if j["start"] < j["trace"].get("due_hdr", -math.inf))
    return {
        "jobs": args.jobs,
        "ran": len(jobs),
        "duplicates": len(jobs) - len(late_ms),
        "p50_ms": round(percentile(short, 50), 2),
        "p90_ms": round(percentile(short, 90), 2),
        "p99_ms": round(percentile(short, 99), 2),
        "max_ms": round(short[-1], 2),
        "min_ms": round(short[0], 2),
        "early": sum(1 for v in late_ms.values() if v < 0),
        "early_by_worker_clock": early_hdr,
        "long_job_s": args.long_s,
        "long_job_ms": round(late_ms[-1], 2),
        "publish_per_s": round(args.jobs / publish_s, 1),
        "publish_concurrency": args.publish_concurrency,
        "first_call_ms": round(first_call_s * 1000, 1),
        "transit": transit(
            [j for j in jobs if j["args"]["i"] >= 0], dict(enumerate(delays)), names.topology
        ),
        "long_job_transit": transit(
            [j for j in jobs if j["args"]["i"] < 0], {-1: args.long_s}, names.topology
        ),
        "stages": stages([j for j in jobs if j["args"]["i"] >= 0]),
        "long_job_stages": stages([j for j in jobs if j["args"]["i"] < 0]),
        "late": explain_late(jobs, worker.stalls, publish_end),
        "stalls": stall_summary(worker.stalls, run_start, time.time()),
        "bare_timer_ms": spread(
            (c["fired"] - c["due"]) * 1000
            for c in worker.controls
            if run_start <= c["due"] <= time.time()
        ),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def memory_run(
    url: str,
    publisher: AMQPWorker,
    worker: WorkerProcess,
    names: Names,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Worker RSS before and after ``pending`` jobs due in 120 s are enqueued; then purge them."""
    await asyncio.sleep(1)
    before = worker.rss_mb()
    publish_s = await perform_in_all(
        publisher, names, "memory", [args.pending_delay_s] * args.pending, BATCH
    )
    await asyncio.sleep(args.settle_s)
    after = worker.rss_mb()
    in_delay = sum(v or 0 for v in (await queue_depths(url, names.delay_queues())).values())
    ran = worker.count("memory")
    removed = await purge(url, [*names.delay_queues(), names.topology.due_queue(names.queue)])
    return {
        "pending": args.pending,
        "delay_s": args.pending_delay_s,
        "publish_per_s": round(args.pending / publish_s, 1),
        "rss_before_mb": round(before, 2),
        "rss_after_mb": round(after, 2),
        "rss_growth_mb": round(after - before, 2),
        "in_delay_queues": in_delay,
        "ran": ran,
        "purged": removed,
    }


async def delay_queue_run(
    url: str, publisher: AMQPWorker, worker: WorkerProcess, names: Names, args: argparse.Namespace
) -> dict[str, Any]:
    """Jobs with ``distinct`` different delays (1 s, 2 s, ... plus random ms); count queues."""
    rng = random.Random(args.seed + 1)
    delays = [i + rng.random() for i in range(1, args.distinct + 1)]
    await perform_in_all(publisher, names, "queues", delays, BATCH)
    prefix = f"{names.name}.delay."
    rows = await rabbitmqctl(url, "list_queues", "name", "messages")
    exchange_rows = await rabbitmqctl(url, "list_exchanges", "name")
    if rows is not None and exchange_rows is not None:
        source = "rabbitmqctl"
        depths: dict[str, int | None] = {
            row[0]: int(row[1]) for row in rows if row[0].startswith(prefix)
        }
        exchanges = [row[0] for row in exchange_rows if row[0].startswith(prefix)]
        every = [row[0] for row in rows if row[0].startswith(f"{names.name}.")]
    else:
        source = "passive declare of the expected names"
        found = await queue_depths(url, names.delay_queues())
        depths = {k: v for k, v in found.items() if v is not None}
        exchanges = await exchanges_exist(url, names.delay_exchanges())
        every = []
    removed = await purge(url, [*depths, names.topology.due_queue(names.queue)])
    return {
        "distinct_delays": args.distinct,
        "source": source,
        "delay_queues": len(depths),
        "delay_queues_holding_jobs": sum(1 for v in depths.values() if v),
        "delay_exchanges": len(exchanges),
        "levels": names.topology.delay.levels,
        "unit_ms": names.topology.delay.unit_ms,
        "queues_with_name_prefix": len(every) if every else None,
        "ran_before_purge": worker.count("queues"),
        "purged": removed,
    }


# -- reporting -----------------------------------------------------------------------------


def progress(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr, flush=True)


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    flat = {**report["lateness"], **report["memory"], **report["delay_queues"]}
    rows = []
    for key, label, target, unit in TARGETS:
        value = flat[key]
        rows.append(
            {
                "key": key,
                "label": label,
                "value": value,
                "target": target,
                "unit": unit,
                "ok": value <= target,
                "celery": CELERY.get(key),
            }
        )
    return rows


STAGE_LABELS = (
    ("stamp_ms", "aw-due-ms after the publisher's due (ceil to ms, Job build)"),
    ("lead_ms", "arrived in the due queue before aw-due-ms (the lead)"),
    ("release_ms", "handed to the task pool after aw-due-ms (timer)"),
    ("dispatch_ms", "task pool to handler start"),
)


def print_stages(title: str, data: dict[str, Any], moved: dict[str, Any]) -> None:
    if not data:
        print(f"  {title}: no trace (the worker's private methods changed?)")
        return
    print(f"  {title} ({data['traced']} traced), ms as min / p50 / p99 / max:")
    rows = [(data[key], label) for key, label in STAGE_LABELS]
    if moved["extra_ms"]:
        rows[1:1] = [
            (moved["planned_lead_ms"], "planned lead: delay - TTLs of the queues it went through"),
            (moved["extra_ms"], "transit beyond those TTLs: publish + dead-letter hops"),
        ]
    for s, label in rows:
        print(f"    {s['min']:>8.2f} {s['p50']:>8.2f} {s['p99']:>8.2f} {s['max']:>8.2f}  {label}")
    print(
        f"    {data['arrived_late']} arrived after their due time; "
        f"{data['rearmed']} timers re-armed (fired before the wall clock reached the due time); "
        f"at most {data['max_held']} held at once"
    )


def print_late(late: dict[str, Any]) -> None:
    stalls, why, bare = late["stalls"], late["late"], late["bare_timer_ms"]
    if bare:
        print(
            f"  control, a bare loop.call_later for each job's due time in the worker: "
            f"p50 {bare['p50']:.2f}, p90 {bare['p90']:.2f}, p99 {bare['p99']:.2f}, "
            f"max {bare['max']:.2f} ms late"
        )
    causes = ", ".join(f"{n} {cause}" for cause, n in stalls["by_cause"].items()) or "none"
    print(
        f"  worker event-loop stalls over {stalls['over_ms']:g} ms during the run: "
        f"{stalls['count']} ({causes}); longest {stalls['max_ms']:.1f} ms; "
        f"{stalls['runq_ms_total']:.0f} ms waiting for a CPU in them; "
        f"load average {late['load_average_1m']}"
    )
    if not why["jobs"]:
        return
    causes = ", ".join(f"{n} {cause}" for cause, n in why["causes"].items())
    print(
        f"  {why['jobs']} jobs over {why['over_ms']:g} ms late ({why['due_while_publishing']} "
        f"due while this process was still publishing); the stall they overlap: {causes}"
    )
    for w in why["worst"]:
        stalls_text = "; ".join(
            f"+{s['over_ms']:.0f} ms (cpu {s['cpu_ms']:.0f}, run queue {s['runq_ms']:.0f})"
            for s in w["stalls"]
        )
        print(
            f"    job {w['i']}: {w['late_ms']:.1f} ms late (timer {w['release_ms']} ms, "
            f"dispatch {w['dispatch_ms']} ms, arrived {w['lead_ms']} ms before due), "
            f"due {w['due_after_publish_s']:+.2f} s after "
            f"publishing ended; stalls: {stalls_text or 'none'}"
        )


def print_report(report: dict[str, Any]) -> None:
    env, late, mem, dq = (
        report["environment"],
        report["lateness"],
        report["memory"],
        report["delay_queues"],
    )
    print(
        f"{describe(env)}; window {report['delay_window_ms']} ms, "
        f"max_concurrency {report['max_concurrency']}, seed {report['seed']}"
        + (f", worker nice {report['worker_nice']:+d}" if report["worker_nice"] else "")
        + (", worker SCHED_FIFO" if report["worker_rt"] else "")
    )
    print(
        f"\nlateness of {late['jobs']:,} jobs due in 1-10 s (handler start - due), ms: "
        f"p50 {late['p50_ms']:.2f}, p90 {late['p90_ms']:.2f}, p99 {late['p99_ms']:.2f}, "
        f"max {late['max_ms']:.2f} (min {late['min_ms']:.2f})"
    )
    print(
        f"  {late['long_job_s']:.0f} s job: {late['long_job_ms']:.2f} ms late; "
        f"ran early: {late['early']} (by the worker's own due header: "
        f"{late['early_by_worker_clock']}); duplicates: {late['duplicates']}"
    )
    print(
        f"  publish: {late['publish_per_s']:,.0f} perform_in/s "
        f"(concurrency {late['publish_concurrency']}); the first call, which declares "
        f"the delay topology, took {late['first_call_ms']:.0f} ms"
    )
    print_stages("short jobs", late["stages"], late["transit"])
    print_stages("long job", late["long_job_stages"], late["long_job_transit"])
    print_late(late)
    print(
        f"\nmemory: {mem['pending']:,} jobs due in {mem['delay_s']:.0f} s "
        f"({mem['publish_per_s']:,.0f}/s): worker RSS {mem['rss_before_mb']:.1f} -> "
        f"{mem['rss_after_mb']:.1f} MB ({mem['rss_growth_mb']:+.2f} MB); "
        f"{mem['in_delay_queues']:,} were in delay queues, {mem['ran']} ran, "
        f"{mem['purged']:,} purged"
    )
    print(
        f"\ndelay topology after {dq['distinct_delays']:,} distinct delays ({dq['source']}): "
        f"{dq['delay_queues']} delay queues ({dq['delay_queues_holding_jobs']} holding jobs), "
        f"{dq['delay_exchanges']} delay exchanges; {dq['levels']} levels, unit {dq['unit_ms']} ms"
    )
    print(f"\n{'':<20} {'result':>10} {'target':>10} {'Celery 5.7':>10}")
    for row in report["verdicts"]:
        unit = f" {row['unit']}" if row["unit"] in ("ms", "MB") else ""
        celery = "" if row["celery"] is None else f"{row['celery']:g}{unit}"
        mark = "ok" if row["ok"] else "MISSED"
        print(
            f"{row['label']:<20} {row['value']:>7g}{unit:<3} {row['target']:>7g}{unit:<3} "
            f"{celery:>10}  {mark}"
        )
    print(
        f"{'publishes/s':<20} {late['publish_per_s']:>10,.0f} {'':>10} "
        f"{CELERY['publish_per_s']:>10,}"
    )


# -- main ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url
    names = Names(window_ms=args.delay_window_ms)
    worker: WorkerProcess | None = None
    publisher: AMQPWorker | None = None
    try:
        progress(args, f"starting the worker process ({names.name})...")
        worker = await WorkerProcess.start(url, names, args)
        rss_start = worker.rss_mb()
        publisher = AMQPWorker(
            url, name=names.name, queues=[names.queue], delay_window_ms=args.delay_window_ms
        )
        progress(args, f"lateness: 1 job in {args.long_s:.0f}s, {args.jobs:,} in 1-10s...")
        lateness = await lateness_run(publisher, worker, names, args)
        progress(args, f"memory: {args.pending:,} jobs due in {args.pending_delay_s:.0f}s...")
        memory = await memory_run(url, publisher, worker, names, args)
        memory["rss_at_start_mb"] = round(rss_start, 2)
        progress(args, f"delay queues: {args.distinct:,} distinct delays...")
        queues = await delay_queue_run(url, publisher, worker, names, args)
    finally:
        try:
            if worker is not None:
                await worker.stop()
            if publisher is not None:
                await publisher.stop()
        finally:
            await cleanup(url, names)
    return {"lateness": lateness, "memory": memory, "delay_queues": queues}


async def main_async(args: argparse.Namespace) -> int:
    results = await run(args)
    report: dict[str, Any] = {
        "quick": args.quick,
        "seed": args.seed,
        "delay_window_ms": args.delay_window_ms,
        "max_concurrency": args.max_concurrency,
        "handler_ms": args.handler_ms,
        "worker_nice": args.worker_nice,
        "worker_rt": args.worker_rt,
        "monitor_ms": args.monitor_ms,
        **results,
        "environment": await environment(args.url),
    }
    report["verdicts"] = verdicts(report)
    report["celery_5_7"] = CELERY
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return exit_status(report["verdicts"])


def exit_status(rows: list[dict[str, Any]]) -> int:
    """0 if every target was met; else 1, after naming each missed one on stderr."""
    missed = [row for row in rows if not row["ok"]]
    for row in missed:
        unit = f" {row['unit']}" if row["unit"] else ""
        print(
            f"bench/delay.py: target missed: {row['label']} {row['value']:g}{unit} "
            f"(target <= {row['target']:g}{unit})",
            file=sys.stderr,
        )
    return 1 if missed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="scaled down, for iterating")
    parser.add_argument("--jobs", type=int, help="jobs due in 1-10 s (1,000; quick: 100)")
    parser.add_argument("--long-s", type=float, help="delay of the long job (60; quick: 20)")
    parser.add_argument(
        "--pending", type=int, help="jobs for the memory run (10,000; quick: 1,000)"
    )
    parser.add_argument("--distinct", type=int, help="distinct delays (1,000; quick: 100)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--publish-concurrency",
        type=int,
        default=1,
        help="perform_in calls in flight in the lateness run (1: sequential)",
    )
    parser.add_argument("--max-concurrency", type=int, default=25, help="worker slots (25)")
    parser.add_argument("--delay-window-ms", type=int, default=1000, help="worker option (1000)")
    parser.add_argument(
        "--handler-ms", type=float, default=0.0, help="time each handler sleeps (0: no-op)"
    )
    parser.add_argument(
        "--monitor-ms",
        type=float,
        default=10.0,
        help="period of the worker's event-loop stall monitor (10; 0: off)",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="niceness added to the worker process (e.g. -10, as root: is lateness CPU-bound?)",
    )
    parser.add_argument(
        "--worker-rt",
        action="store_true",
        help="run the worker as SCHED_FIFO 1 (root; a diagnostic: the floor with a CPU on wake-up)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--url", default=DEFAULT_URL, help="broker URL (AMQP_WORKER_BENCH_URL)")
    args = parser.parse_args(argv)
    defaults = (100, 20.0, 1_000, 100) if args.quick else (1_000, 60.0, 10_000, 1_000)
    for key, default in zip(("jobs", "long_s", "pending", "distinct"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.pending_delay_s = 120.0
    args.settle_s = 5.0
    if min(args.jobs, args.pending, args.distinct, args.publish_concurrency) < 1:
        parser.error("--jobs, --pending, --distinct and --publish-concurrency must be >= 1")
    if args.long_s < 1:
        parser.error("--long-s must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted; the run's queues and exchanges were deleted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
