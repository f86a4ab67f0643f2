"""A worker's deliveries up to the moment they run: decode, check, route by due time.

Every message from a worker's work, due and quarantine queues passes here
first (:class:`Intake`). A body that is not a job, is too large or names an
unregistered handler is parked with its reason and never runs. A redelivered
job (handed out before and never finished) is quarantined or parked as
crashed (:mod:`amqp_worker._rabbitmq.quarantine`). A job from a due queue
runs if due, waits unacked in the :class:`~amqp_worker._rabbitmq.due.DueHold`
if due soon, or goes round the delay topology again. A job of a limited
handler is moved to its limit queue, and runs from there once its limit is
met (:mod:`amqp_worker._rabbitmq.limits`). What is left runs:
``run(queue, message, job)`` queues it for a handler slot.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from amqp_worker._core.failures import FailureReason
from amqp_worker._core.job import Job
from amqp_worker._core.registry import Registry
from amqp_worker.errors import HandlerNotRegistered, JobTooLarge

from .consumer import Delivery
from .due import DueAction, DueHold, due_action, due_ms_of
from .limits import RabbitLimits
from .messages import DELIVERIES_HEADER, carried_headers
from .publishing import now_ms
from .quarantine import VerdictKind, crash_error, verdict
from .settings import AMQPSettings
from .settle import Settler

__all__ = ["Intake", "Received"]

#: A delivery on one of this worker's queues: (job queue, message).
Received = tuple[str, Delivery]


#: How the worker parks a message and tells its hooks: (queue, message, reason, error, the job
#: if the body is one, headers to add).
Park = Callable[
    [str, Delivery, FailureReason, BaseException, Job | None, dict[str, Any] | None],
    Awaitable[None],
]


class Intake:
    """Decides, for each delivery, whether it runs, waits, goes round again or is parked."""

    def __init__(
        self,
        settings: AMQPSettings,
        registry: Registry,
        settler: Settler,
        *,
        run: Callable[[str, Delivery, Job], None],
        park: Park,
        running: Callable[[], bool],
        limits: RabbitLimits,
    ) -> None:
        self.settings = settings
        self._limits = limits
        self._registry = registry
        self._settler = settler
        self._run = run
        self._park_message = park
        self._running = running
        self._hold: DueHold[Received] = DueHold(
            self._on_held_due, limit=settings.delay_prefetch, window_ms=settings.delay_window_ms
        )

    def release_held(self) -> list[Received]:
        """Every job held for its due time (the caller hands them back), timers cancelled."""
        return self._hold.release_all()

    async def on_message(self, queue: str, message: Delivery) -> None:
        self._settler.delivered(message)
        # The job gets a task of its own, not the one aiormq delivered it in: aiormq
        # cancels its delivery tasks when the channel closes, and a network blip must
        # not cancel a running handler (its job is redelivered either way).
        self._accept(queue, message)

    async def on_quarantined(self, queue: str, message: Delivery) -> None:
        """A delivery from the quarantine queue: it waits for this worker's moves to settle.

        The job was moved here (copied, confirmed, its original acked) by this
        or another worker. If this worker moved it and the original's ack were
        not yet written when this copy's handler kills the process, the
        original would come back as well as the copy (see Settler.quarantine).
        """
        self._settler.delivered(message)
        await self._settler.moves_settled()
        self._accept(queue, message)

    async def on_partitioned(self, queue: str, message: Delivery) -> None:
        """A delivery from a partition queue: run as it comes, redelivered or not.

        A redelivered job stays at the head of its partition (quarantining it
        would break the order); its quorum queue counts deliveries instead
        (see :mod:`amqp_worker._rabbitmq.partitions`).
        """
        self._settler.delivered(message)
        self._accept(queue, message, in_order=True)

    async def on_limited(self, queue: str, handler: str, message: Delivery) -> None:
        """A delivery from a limit queue: it runs once a token (with a rate) is taken.

        A redelivered one runs as it comes, as in a partition: the limit
        queue counts deliveries (:mod:`amqp_worker._rabbitmq.limits`).
        """
        self._settler.delivered(message)
        self._settler.track(self._take_then_accept(queue, handler, message))

    async def _take_then_accept(self, queue: str, handler: str, message: Delivery) -> None:
        if not await self._limits.take(handler):
            self._settler.hand_back(message)  # the worker stopped first
        elif await self._limits.admit(queue, message):  # else snoozed over its key's rate
            self._accept(queue, message, in_order=True, limited=True)

    async def on_due(self, queue: str, message: Delivery) -> None:
        self._settler.delivered(message)
        self._schedule(queue, message)

    def _schedule(self, queue: str, message: Delivery) -> None:
        """Run a delayed job if due; hold it if due within the window; else send it round again."""
        due_ms = due_ms_of(message.headers)
        decision = due_action(due_ms, now_ms(), self.settings.delay_window_ms)
        if decision.action is DueAction.RUN:
            self._accept(queue, message)
        elif decision.action is DueAction.HOLD:
            self._hold.hold((queue, message), decision.wait_ms)
        else:
            assert due_ms is not None  # SEND_ROUND only for a due time
            self._settler.track(self._redelay(queue, message, int(due_ms)))

    def _on_held_due(self, delivery: Received) -> None:
        if self._running():
            # Check the wall clock again: a timer may fire a hair early, a job never may.
            self._schedule(*delivery)
        else:
            self._settler.hand_back(delivery[1])

    def _decode(self, queue: str, message: Delivery) -> Job | None:
        """The job ``message`` carries; None if its body is not one (it is parked)."""
        if len(message.body) > self.settings.max_message_bytes:
            # Never parse it: an oversized body is slow to parse on purpose, or by mistake.
            error = JobTooLarge(f"{len(message.body)} bytes, over max_message_bytes")
            reason = FailureReason.TOO_LARGE
            self._settler.track(self._park_message(queue, message, reason, error, None, None))
            return None
        try:
            return Job.from_json(message.body)
        except ValidationError as exc:
            bad_json = any(err["type"] == "json_invalid" for err in exc.errors())
            reason = FailureReason.INVALID_JSON if bad_json else FailureReason.INVALID_JOB
            self._settler.track(self._park_message(queue, message, reason, exc, None, None))
            return None

    def _accept(
        self, queue: str, message: Delivery, in_order: bool = False, limited: bool = False
    ) -> None:
        """Run the job ``message`` carries, or park, quarantine or move it.

        ``in_order``: from a queue that counts deliveries (partition, limit
        queue). ``limited``: its limit was met (token taken, lane held).
        """
        job = self._decode(queue, message)
        if job is None:
            return
        if job.handler not in self._registry.handlers:
            error = HandlerNotRegistered(job.handler)
            reason = FailureReason.UNKNOWN_HANDLER
            self._settler.track(self._park_message(queue, message, reason, error, job, None))
            return
        if message.redelivered and not in_order:
            self._settler.track(self._came_back(queue, message, job))
            return
        if not limited and self._limits.of(job) is not None:
            if in_order:  # partitioned: moving it would break its order; a token in place
                self._settler.track(self._take_then_accept(queue, job.handler, message))
            else:
                self._settler.track(self._limits.move(queue, message, job))
            return
        self._run(queue, message, job)

    async def _came_back(self, queue: str, message: Delivery, job: Job) -> None:
        """A job that was handed out before and never finished: quarantine it, or park it."""
        found = verdict(True, message.headers, self.settings.max_deliveries)
        if found.kind is VerdictKind.QUARANTINE:
            await self._settler.quarantine(queue, message, job, found.deliveries)
        else:
            error = crash_error(job, found.deliveries, self.settings.max_deliveries)
            extra = {DELIVERIES_HEADER: found.deliveries}
            await self._park_message(queue, message, FailureReason.CRASHED, error, job, extra)

    async def _redelay(self, queue: str, message: Delivery, due_ms: int) -> None:
        """Send a job that is far from due round the delay topology again; then ack it."""
        job = self._decode(queue, message)
        if job is not None:
            headers = carried_headers(message.headers)
            await self._settler.republish(message, job, headers, due_ms, pause=False)
