"""One attempt of a job: validate its args, run its handler, log and tell the hooks.

These are the steps of :meth:`amqp_worker._core.base.BaseWorker._run` that do not
depend on where the job came from. Every attempt ends in an :class:`Outcome`;
a failed one is logged exactly once, with the job's identity and traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from amqp_worker.errors import HandlerNotRegistered, InvalidArgs, JobCancelled

from .cancels import RunningAttempt, refused_error
from .failures import FailureReason
from .handler_threads import HandlerThreads
from .handlers import HandlerSpec
from .hooks import Hooks, JobEvent
from .job import Job
from .retry import Decision
from .watchdog import OnLoop, RunningHandler

__all__ = ["Outcome", "report_failure", "run_attempt", "tell_failure", "tell_parked"]

logger = logging.getLogger("amqp_worker")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went."""

    error: BaseException | None
    duration_s: float
    linger: asyncio.Future[Any] | None = None
    """A timed-out sync handler's thread, still running."""
    value: Any = None
    """What the handler returned (on success)."""

    async def wait_linger(self) -> None:
        """Hold the slot until a timed-out sync handler's thread has returned."""
        if self.linger is not None:
            with contextlib.suppress(Exception):
                await self.linger


async def run_attempt(
    spec: HandlerSpec | None,
    job: Job,
    queue: str,
    headers: Mapping[str, Any],
    *,
    hooks: Hooks,
    threads: HandlerThreads | None,
    timeout_s: float | None,
    on_loop: OnLoop | None = None,
    attempt: RunningAttempt | None = None,
) -> Outcome:
    """Run one attempt of ``job`` with ``spec`` (None: no such handler) and report how it went.

    Invalid args and a missing handler fail before the ``before`` hooks run.
    A cancelled attempt (stop() gave up on it) still tells the ``on_failure``
    hooks, then re-raises. While an async handler runs, it is in ``on_loop``
    (keyed by this task), for the loop watchdog to name. A cancel that reaches
    ``attempt`` (its job's, while it runs) ends it as
    :class:`~amqp_worker.errors.JobCancelled`, whatever the handler did.
    """
    try:
        if spec is None:
            raise HandlerNotRegistered(job.handler)
        args = spec.parse_args(job)
    except (HandlerNotRegistered, InvalidArgs) as exc:
        return Outcome(exc, 0.0)
    if hooks:
        await hooks.emit(JobEvent("before", queue, job, job.id, job.attempt, headers=headers))
    started = time.perf_counter()
    signal = None
    if attempt is not None:
        if attempt.requested:  # cancelled since the start gate (during the `before` hooks)
            return Outcome(refused_error(job.id), 0.0)
        signal = attempt.signal if spec.wants_cancelled else None
        attempt.enter(asyncio.current_task() if spec.is_async else None)
    # Only async handlers run on the loop; sync ones are in threads and cannot stall it.
    task = asyncio.current_task() if on_loop is not None and spec.is_async else None
    try:
        if task is None:
            value, linger = await spec.run(job, args, threads, timeout_s, signal)
        else:
            assert on_loop is not None
            on_loop[task] = RunningHandler(job.handler, job.id, queue, started)
            try:
                value, linger = await spec.run(job, args, threads, timeout_s, signal)
            finally:
                del on_loop[task]
    except asyncio.CancelledError as cancelled:
        if attempt is not None and attempt.leave(raised_cancelled=True):
            return Outcome(attempt.error(), time.perf_counter() - started)
        # Hooks that opened something in `before` (a span, an in-progress count)
        # must hear that it ended. The job itself is not settled here; the
        # worker hands it back.
        with contextlib.suppress(BaseException):
            await tell_failure(hooks, job, queue, time.perf_counter() - started, cancelled, headers)
        raise
    except Exception as exc:
        if attempt is not None and attempt.leave():
            return Outcome(attempt.error(), time.perf_counter() - started)
        return Outcome(exc, time.perf_counter() - started)
    duration = time.perf_counter() - started
    if attempt is not None and attempt.leave():
        # The cancel wins over a success: no result kept, no next step, no ack as done.
        return Outcome(attempt.error(), duration, linger)
    if linger is not None:
        return Outcome(spec.timeout_error(timeout_s), duration, linger)
    if logger.isEnabledFor(logging.DEBUG):
        # DEBUG, not INFO: one line per job is the hot path's largest cost at INFO.
        # Failures are logged (once each) at ERROR; metrics count successes.
        logger.debug(
            "job %s succeeded: handler=%s queue=%s attempt=%d duration=%.3fs",
            job.id,
            job.handler,
            queue,
            job.attempt,
            duration,
            extra={
                "job_id": job.id,
                "handler": job.handler,
                "queue": queue,
                "attempt": job.attempt,
                "duration_s": round(duration, 6),
                "outcome": "succeeded",
            },
        )
    if hooks:
        await hooks.emit(
            JobEvent("after", queue, job, job.id, job.attempt, duration, headers=headers)
        )
    return Outcome(None, duration, value=value)


async def report_failure(
    hooks: Hooks,
    job: Job,
    queue: str,
    outcome: Outcome,
    decision: Decision,
    headers: Mapping[str, Any],
) -> None:
    """Log a failed attempt once, with its identity and traceback, and tell the hooks."""
    exc = outcome.error
    assert exc is not None
    then = f"retrying in {decision.delay_s:.3g}s" if decision.retry else "parking it"
    # A cancel is somebody's decision, not a fault: a WARNING, and no traceback.
    cancelled = isinstance(exc, JobCancelled)
    logger.log(
        logging.WARNING if cancelled else logging.ERROR,
        "job %s failed: handler=%s queue=%s attempt=%d duration=%.3fs: %s: %s; %s",
        job.id,
        job.handler,
        queue,
        job.attempt,
        outcome.duration_s,
        type(exc).__name__,
        exc,
        then,
        exc_info=None if cancelled else exc,
        extra={
            "job_id": job.id,
            "handler": job.handler,
            "queue": queue,
            "attempt": job.attempt,
            "duration_s": round(outcome.duration_s, 6),
            "outcome": "retried" if decision.retry else "parked",
        },
    )
    retry_in_s = decision.delay_s if decision.retry else None
    await tell_failure(hooks, job, queue, outcome.duration_s, exc, headers, retry_in_s)


async def tell_failure(
    hooks: Hooks,
    job: Job,
    queue: str,
    duration_s: float,
    error: BaseException,
    headers: Mapping[str, Any],
    retry_in_s: float | None = None,
) -> None:
    """Tell the ``on_failure`` hooks that an attempt of ``job`` ended without success."""
    if hooks:
        await hooks.emit(
            JobEvent(
                "on_failure",
                queue,
                job,
                job.id,
                job.attempt,
                duration_s,
                error,
                retry_in_s=retry_in_s,
                headers=headers,
            )
        )


async def tell_parked(
    hooks: Hooks,
    queue: str,
    job: Job | None,
    job_id: str,
    reason: FailureReason,
    error: BaseException,
    headers: Mapping[str, Any],
) -> None:
    """Tell the ``on_parked`` hooks that a job (or a body that is not one) was parked."""
    if hooks:
        await hooks.emit(
            JobEvent(
                "on_parked",
                queue,
                job,
                job_id,
                job.attempt if job else 0,
                error=error,
                reason=reason,
                headers=headers,
            )
        )
