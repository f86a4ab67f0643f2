"""The consumer side of ``bench/delay.py``: one AMQPWorker in a process of its own.

Not meant to be run by hand. ``delay.py`` starts it, reads its RSS from
``/proc/<pid>/status``, and reads what it reports from its stdout, one JSON
object per line:

- ``{"event": "ready", "pid": ...}`` once ``start()`` has returned;
- ``{"event": "job", "start": ..., "args": {...}, "trace": {...}}`` per job, where
  ``start`` is ``time.time()`` taken first thing in the handler;
- ``{"event": "control", "due": ..., "fired": ...}`` per delayed job: a bare
  ``loop.call_later`` armed on the job's arrival for its due time, the floor any
  asyncio worker could reach in this process at that moment;
- ``{"event": "stall", ...}`` whenever the event loop woke up late (see ``monitor``);
- ``{"event": "stopped"}`` after ``stop()``.

It stops on SIGTERM or SIGINT, or when its stdin closes (the bench died), and
hands held jobs back to RabbitMQ as ``stop()`` does. It never deletes anything:
the bench cleans up.

``trace`` breaks each delayed job's path down, all ``time.time()`` seconds:
``due_hdr`` (the ``aw-due-ms`` header the worker schedules by), ``arrived`` (first
delivery from the due queue), ``accepted`` (when ``_schedule`` handed it to the
task pool) and ``schedules`` (how often ``_schedule`` ran for it: a held job takes
2, on arrival and when its timer fires; more means a timer fired before the wall
clock reached the due time and was re-armed). It wraps private methods of the
worker's ``Intake`` (amqp_worker/_rabbitmq/intake.py), as the throughput bench
reads its private ``_pool``: there is no public hook at those points. A rename
stops the bench at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.due import due_ms_of
from amqp_worker._rabbitmq.intake import Intake

#: The private steps of the worker's Intake this bench wraps; a rename must fail loudly.
WRAPPED = ("on_due", "_schedule", "_accept")
_gone = [name for name in WRAPPED if not callable(getattr(Intake, name, None))]
if _gone:
    raise SystemExit(f"bench/_delay_worker.py: Intake no longer has {', '.join(_gone)}")


class TracingWorker(AMQPWorker):
    """An AMQPWorker that time-stamps each delayed job on its way to the handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace: dict[str, dict[str, float]] = {}
        # Instance attributes win over the methods, also for the Intake's own calls.
        intake = self._intake
        self._inner = (intake.on_due, intake._schedule, intake._accept)
        intake.on_due, intake._schedule, intake._accept = (  # type: ignore[method-assign]
            self._on_due,
            self._schedule,
            self._accept,
        )

    def _stamps(self, message: AbstractIncomingMessage) -> dict[str, float]:
        return self.trace.setdefault(message.message_id or "", {})

    async def _on_due(self, queue: str, message: AbstractIncomingMessage) -> None:
        now = time.time()
        stamps = self._stamps(message)
        stamps.setdefault("arrived", now)
        due_ms = due_ms_of(message.headers)
        due = due_ms / 1000 if due_ms is not None else None
        first = due is not None and "due_hdr" not in stamps
        if due is not None and first:
            stamps["due_hdr"] = due
        await self._inner[0](queue, message)
        if due is not None and first and due > now:
            # The control: a bare asyncio timer for the same instant, in the same loop,
            # armed after the worker's own so that it never delays the job.
            asyncio.get_running_loop().call_later(due - time.time(), self._control, due)

    def _control(self, due: float) -> None:
        emit({"event": "control", "fired": time.time(), "due": due})

    def _schedule(self, queue: str, message: AbstractIncomingMessage) -> None:
        stamps = self._stamps(message)
        stamps["schedules"] = stamps.get("schedules", 0) + 1
        self._inner[1](queue, message)

    def _accept(self, queue: str, message: AbstractIncomingMessage) -> None:
        self._stamps(message)["accepted"] = time.time()
        self._inner[2](queue, message)

    def take_trace(self, job_id: str) -> dict[str, float]:
        return self.trace.pop(job_id, {})


class SchedStat:
    """CPU time and run-queue wait of the calling thread, from /proc (Linux only)."""

    def __init__(self) -> None:
        path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        self.fd = os.open(path, os.O_RDONLY)

    def read(self) -> tuple[float, float]:
        """(seconds on a CPU, seconds runnable but waiting for a CPU), cumulative."""
        on_cpu, waiting, _ = os.pread(self.fd, 128, 0).split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9


async def monitor(interval_s: float, threshold_s: float) -> None:
    """Report every stall of the event loop: a sleep that overshot by more than threshold_s.

    Each report says what the loop's thread did meanwhile: ran on a CPU (the loop
    was busy), waited in the run queue for a CPU (the machine was busy), or
    neither (it slept longer than asked).
    """
    try:
        stat = SchedStat()
    except OSError:
        return
    while True:
        wall0, (cpu0, wait0) = time.time(), stat.read()
        await asyncio.sleep(interval_s)
        wall1, (cpu1, wait1) = time.time(), stat.read()
        over = wall1 - wall0 - interval_s
        if over > threshold_s:
            emit(
                {
                    "event": "stall",
                    "start": wall0,
                    "end": wall1,
                    "over_ms": over * 1000,
                    "cpu_ms": (cpu1 - cpu0) * 1000,
                    "runq_ms": (wait1 - wait0) * 1000,
                }
            )


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    worker = TracingWorker(
        args.url,
        name=args.name,
        queues=[args.queue],
        max_concurrency=args.max_concurrency,
        delay_window_ms=args.delay_window_ms,
    )
    work_s = args.handler_ms / 1000

    async def record(job_args: dict[str, Any], job: Job) -> None:
        start = time.time()
        emit({"event": "job", "start": start, "args": job_args, "trace": worker.take_trace(job.id)})
        if work_s:
            await asyncio.sleep(work_s)

    worker.register("record", record)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):  # EOF: the bench is gone
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    watch: asyncio.Task[None] | None = None
    try:
        await worker.start()
        if args.monitor_ms > 0:
            watch = asyncio.create_task(monitor(args.monitor_ms / 1000, args.stall_ms / 1000))
        emit({"event": "ready", "pid": os.getpid()})
        await stop.wait()
    finally:
        if watch is not None:
            watch.cancel()
        await worker.stop(timeout_s=5)
        emit({"event": "stopped"})


def main() -> None:
    parser = argparse.ArgumentParser(description="consumer process of bench/delay.py")
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--max-concurrency", type=int, default=25)
    parser.add_argument("--delay-window-ms", type=int, default=1000)
    parser.add_argument("--handler-ms", type=float, default=0.0)
    parser.add_argument("--monitor-ms", type=float, default=10.0, help="0: no stall monitor")
    parser.add_argument("--stall-ms", type=float, default=3.0)
    parser.add_argument("--nice", type=int, default=0, help="added to the process's niceness")
    parser.add_argument("--rt", action="store_true", help="SCHED_FIFO priority 1 (root)")
    args = parser.parse_args()
    if args.nice:
        os.nice(args.nice)  # negative values need CAP_SYS_NICE (root)
    if args.rt:
        # Only to show what the design does when the worker always gets a CPU on wake-up.
        # Children (the thread pool) inherit it; the handlers here never use it.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
