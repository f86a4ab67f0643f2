"""Hooks: callbacks around every job, for alerts, metrics and tracing, without subclassing.

::

    @worker.hooks.on_parked
    async def alert(event: JobEvent) -> None:
        await pager.send(f"job {event.job_id} parked: {event.reason}")

On the publishing side, ``on_publish`` hooks get each outgoing job and its
message headers, which they may add to (tracing context, say). The headers
travel with the job through delays and retries, and hooks see them again
as ``event.headers``.

Four moments on the consuming side:

- ``before``: a job is about to run (its args are valid, its handler known);
- ``after``: it succeeded (``duration_s`` is set);
- ``on_failure``: an attempt failed (``error`` is set; ``retry_in_s`` too if it
  will be retried). It also fires, with an ``asyncio.CancelledError``, for an
  attempt that ``stop()`` cancelled; such a job goes back to the queue;
- ``on_parked``: a job went to the failed-jobs queue (``reason`` is set; ``job``
  is None if the message was not a valid job).

Schedules have one more, ``on_tick`` (sync): the worker fired a schedule's
tick (a :class:`~amqp_worker._core.ticker.TickEvent`, with the tick's lateness).

Hooks may be sync or async. They run on the event loop, in registration
order, so keep them quick. An exception in a hook is logged and otherwise
ignored: a broken metrics exporter never fails a job.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .failures import FailureReason
from .job import Job
from .ticker import TickEvent

__all__ = ["Hook", "Hooks", "JobEvent", "PublishHook"]

logger = logging.getLogger("amqp_worker")

Moment = Literal["before", "after", "on_failure", "on_parked"]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What a hook is told about a job."""

    moment: Moment
    queue: str
    job: Job | None
    job_id: str
    attempt: int = 0
    duration_s: float | None = None
    error: BaseException | None = None
    retry_in_s: float | None = None
    reason: FailureReason | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    """The job message's headers (what ``on_publish`` hooks added, among others)."""

    @property
    def handler(self) -> str | None:
        return self.job.handler if self.job else None


Hook = Callable[[JobEvent], Awaitable[None] | None]
PublishHook = Callable[[Job, dict[str, Any]], None]
TickHook = Callable[[TickEvent], None]


class Hooks:
    """Registered hooks of one worker. Each method registers a hook and returns it."""

    def __init__(self) -> None:
        self._hooks: dict[Moment, list[Hook]] = {
            "before": [],
            "after": [],
            "on_failure": [],
            "on_parked": [],
        }
        self._publish: list[PublishHook] = []
        self._tick: list[TickHook] = []

    def on_publish(self, hook: PublishHook) -> PublishHook:
        """Run ``hook(job, headers)`` for each job enqueued; it may add headers."""
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        self._publish.append(hook)
        return hook

    def publishing(self, job: Job) -> dict[str, Any]:
        """The headers ``on_publish`` hooks give ``job``; their errors are logged, not raised."""
        headers: dict[str, Any] = {}
        for hook in self._publish:
            try:
                hook(job, headers)
            except Exception:
                logger.exception("on_publish hook %r failed for job %s", hook, job.id)
        return headers

    def on_tick(self, hook: TickHook) -> TickHook:
        """Run ``hook(event)`` for each schedule tick this worker fired (a ``TickEvent``)."""
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        self._tick.append(hook)
        return hook

    def ticked(self, event: TickEvent) -> None:
        """Tell the ``on_tick`` hooks; their errors are logged, not raised."""
        for hook in self._tick:
            try:
                hook(event)
            except Exception:
                logger.exception("on_tick hook %r failed for schedule %s", hook, event.schedule)

    def before(self, hook: Hook) -> Hook:
        """Run ``hook`` before each attempt."""
        return self._add("before", hook)

    def after(self, hook: Hook) -> Hook:
        """Run ``hook`` after each successful job."""
        return self._add("after", hook)

    def on_failure(self, hook: Hook) -> Hook:
        """Run ``hook`` after each failed attempt."""
        return self._add("on_failure", hook)

    def on_parked(self, hook: Hook) -> Hook:
        """Run ``hook`` when a job is parked in a failed-jobs queue."""
        return self._add("on_parked", hook)

    def _add(self, moment: Moment, hook: Hook) -> Hook:
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        self._hooks[moment].append(hook)
        return hook

    def copy(self) -> Hooks:
        """A new registry with the same hooks; registering on one leaves the other alone."""
        fresh = Hooks()
        for moment, hooks in self._hooks.items():
            fresh._hooks[moment] = list(hooks)
        fresh._publish = list(self._publish)
        fresh._tick = list(self._tick)
        return fresh

    def __bool__(self) -> bool:
        """True if any consuming-side hook is registered."""
        return any(self._hooks.values())

    async def emit(self, event: JobEvent) -> None:
        """Call the hooks registered for ``event.moment``; log and swallow their errors."""
        for hook in self._hooks[event.moment]:
            try:
                result = hook(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("%s hook %r failed for job %s", event.moment, hook, event.job_id)
