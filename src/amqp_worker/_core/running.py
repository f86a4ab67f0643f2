"""Running one job: the template method every worker shares, and the gate before it.

:class:`JobRunner` is a base of :class:`~amqp_worker._core.base.BaseWorker`
(after :class:`~amqp_worker._core.workflow_worker.WorkflowWorker`). Its
:meth:`JobRunner._run` takes one delivery from any transport through: the
start gate (fleet controls that refuse a job before it starts: cancel,
expiry), one attempt (that a cancel of its job reaches), then success (:meth:`_settle_success`), a retry later, or a park.
A worker overrides only the transport steps (:meth:`_succeeded`,
:meth:`_retry_later`, :meth:`_park`).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

from amqp_worker.errors import PermanentError

from .attempt import Outcome, report_failure, run_attempt
from .cancel_worker import CancelWorker
from .cancels import refused_error
from .controls import expiry_error
from .failures import AttemptRecord, FailureReason
from .handlers import HandlerSpec
from .hooks import Hooks
from .job import Job
from .pool import TaskPool
from .registry import Registry
from .retry import RetryPolicy, decide
from .watchdog import LoopWatchdog, OnLoop
from .workflow_worker import WorkflowWorker

__all__ = ["D", "JobRunner"]

#: What a worker's transport hands to :meth:`JobRunner._run`: a message, an entry in memory.
D = TypeVar("D")


class JobRunner(CancelWorker, WorkflowWorker, Generic[D]):
    """Runs one attempt of a job and settles its delivery (see the module docstring)."""

    # -- provided by BaseWorker -----------------------------------------------------
    _registry: Registry
    _pool: TaskPool
    _watchdog: LoopWatchdog | None
    _on_loop: OnLoop
    hooks: Hooks
    retry: RetryPolicy
    timeout_s: float | None

    def _refusal(
        self, job: Job, spec: HandlerSpec | None, headers: Mapping[str, Any]
    ) -> PermanentError | None:
        """Why ``job`` must not start now (it is parked with that error); None: it may."""
        if job.id in self._cancels:
            return refused_error(job.id)
        return expiry_error(job, headers, spec.max_age_s if spec is not None else None, self._now())

    def _spec(self, job: Job) -> HandlerSpec:
        return self._registry.spec(job)

    async def _run(
        self,
        delivery: D,
        job: Job,
        queue: str,
        headers: Mapping[str, Any],
        history: Sequence[AttemptRecord] = (),
    ) -> None:
        """Run one attempt of ``job`` and settle ``delivery``: the flow every worker shares.

        Success settles it (:meth:`_succeeded`). A failure is logged and told
        to the hooks once, added to the job's ``history``, and then, per the
        handler's retry policy, either enqueued again with ``attempt + 1``
        (:meth:`_retry_later`) or parked with the whole history
        (:meth:`_park`); a job with a ``partition_key`` is retried in place,
        after its backoff. A timed-out sync handler keeps its slot until its
        thread returns. A job the start gate refuses (:meth:`_refusal`) is
        never attempted: it fails with that error (a permanent one: parked). A
        cancel of the job while it runs ends the attempt as cancelled (parked).
        """
        spec = self._registry.handlers.get(job.handler)
        timeout_s = self._registry.timeout_for(spec, self.timeout_s) if spec is not None else None
        # Registered before the gate: a cancel from now on reaches this attempt.
        attempt = self._cancels.begin(job.id)
        try:
            refused = self._refusal(job, spec, headers)
            if refused is not None:
                # Never started: no hook heard a `before`; the failure path parks it.
                outcome = Outcome(refused, 0.0)
            else:
                outcome = await run_attempt(
                    spec,
                    job,
                    queue,
                    headers,
                    hooks=self.hooks,
                    threads=self._pool.threads,
                    timeout_s=timeout_s,
                    on_loop=self._on_loop if self._watchdog is not None else None,
                    attempt=attempt,
                )
        finally:
            self._cancels.end(attempt)
        if outcome.error is None:
            invalid = await self._settle_success(delivery, spec, job, queue, outcome.value)
            if invalid is None:
                return
            outcome = Outcome(invalid, outcome.duration_s)
        error = outcome.error
        assert error is not None  # a success returned above
        policy = spec.retry if spec is not None and spec.retry is not None else self.retry
        decision = decide(policy, job.attempt, error)
        await report_failure(self.hooks, job, queue, outcome, decision, headers)
        history = [*history, AttemptRecord.of(job.attempt, error)]
        if decision.retry:
            retry = job.model_copy(update={"attempt": job.attempt + 1})
            if job.partition_key is not None:
                # In place, holding the delivery: the jobs behind it in its partition
                # wait, as its order requires (a stop hands it back to the head).
                await outcome.wait_linger()
                await asyncio.sleep(decision.delay_s)
                await self._run(delivery, retry, queue, headers, history)
                return
            await self._retry_later(delivery, retry, queue, decision.delay_s, history)
        else:
            try:
                await self._after_parked(spec, job, queue, decision.reason, error)
            except Exception as exc:
                await self._unfinished(delivery, job, exc)
                return
            await self._park(delivery, job, queue, decision.reason, error, history)
        await outcome.wait_linger()

    @abc.abstractmethod
    async def _retry_later(
        self, delivery: D, retry: Job, queue: str, delay_s: float, history: list[AttemptRecord]
    ) -> None:
        """Enqueue ``retry`` (the next attempt) after ``delay_s``, then settle ``delivery``."""

    @abc.abstractmethod
    async def _park(
        self,
        delivery: D,
        job: Job,
        queue: str,
        reason: FailureReason,
        error: BaseException,
        history: list[AttemptRecord],
    ) -> None:
        """Keep ``job`` as a failed job with ``reason`` and ``history``, then settle ``delivery``.

        Tell the ``on_parked`` hooks (:func:`~amqp_worker._core.attempt.tell_parked`) once it is kept.
        """
