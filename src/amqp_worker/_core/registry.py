"""What a worker knows by name: its handlers, each with its options, and its schedules."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta

from amqp_worker.errors import (
    HandlerAlreadyRegistered,
    HandlerNotRegistered,
    InvalidHandler,
    InvalidSchedule,
)

from .handlers import Handler, HandlerSpec
from .job import Job
from .limits import Limits
from .retry import RetryPolicy
from .schedule import MissedPolicy, Schedule
from .typed import unwrap

__all__ = ["LimitOptions", "Registry"]

#: A handler's limit options as given: ``(rate, burst, concurrency, limit_key)``.
LimitOptions = tuple[str | None, int | None, int | None, str | Callable[[Job], str | None] | None]

logger = logging.getLogger("amqp_worker")


class Registry:
    """The handlers and schedules of one worker, by name."""

    __slots__ = ("handlers", "schedules")

    def __init__(self) -> None:
        self.handlers: dict[str, HandlerSpec] = {}
        self.schedules: dict[str, Schedule] = {}

    def fill_from(self, other: Registry) -> None:
        """Hold ``other``'s entries instead of this one's; adding to either later changes one.

        In place: the parts of a worker that were handed this registry see the change.
        """
        self.handlers = dict(other.handlers)
        self.schedules = dict(other.schedules)

    def register(
        self,
        name: str,
        handler: Handler,
        retry: RetryPolicy | None,
        timeout_s: float | None,
        result: bool = False,
        max_age_s: float | None = None,
        limits: LimitOptions = (None, None, None, None),
        running: bool = False,
    ) -> HandlerSpec:
        """Add ``handler`` as ``name``; see :meth:`amqp_worker.Worker.register` for the errors.

        ``limits`` is ``(rate, burst, concurrency, limit_key)``; a limited handler cannot
        be added to a ``running`` worker (its limit queues are consumed from
        the start).
        """
        try:
            checked = Limits.of(*limits)
        except (TypeError, ValueError) as exc:
            raise InvalidHandler(f"handler {name!r}: {exc}") from None
        if checked is not None and running:
            raise InvalidHandler(
                f"handler {name!r}: register handlers with a rate or concurrency limit "
                "before start()"
            )
        spec = HandlerSpec.inspect(
            name,
            unwrap(handler),
            retry=retry,
            timeout_s=timeout_s,
            result=result,
            max_age_s=max_age_s,
            limits=checked,
        )
        if name in self.handlers:
            raise HandlerAlreadyRegistered(name)
        self.handlers[name] = spec
        return spec

    def schedule(
        self,
        name: str,
        job: Job,
        *,
        cron: str | None,
        every: timedelta | float | None,
        tz: str,
        missed: MissedPolicy,
        running: bool,
    ) -> Schedule:
        """Add a schedule; see :meth:`amqp_worker.Worker.schedule` for the errors."""
        spec = Schedule.build(name, job, cron=cron, every=every, tz=tz, missed=missed)
        if name in self.schedules:
            raise InvalidSchedule(f"a schedule named {name!r} is already defined")
        if running:
            raise InvalidSchedule(f"schedule {name!r}: declare schedules before start()")
        self.schedules[name] = spec
        return spec

    def spec(self, job: Job) -> HandlerSpec:
        """The handler ``job`` names; :class:`HandlerNotRegistered` if there is none."""
        try:
            return self.handlers[job.handler]
        except KeyError:
            raise HandlerNotRegistered(job.handler) from None

    @staticmethod
    def timeout_for(spec: HandlerSpec, default_s: float | None) -> float | None:
        """The handler's timeout, else ``default_s``, in seconds; None for no limit."""
        timeout = spec.timeout_s if spec.timeout_s is not None else default_s
        return None if timeout is None or math.isinf(timeout) else timeout

    def warn_timeouts_over(self, limit_s: float | None, default_s: float | None) -> None:
        """Warn about handlers whose timeout exceeds the broker's consumer timeout ``limit_s``."""
        if limit_s is None:
            return
        for name, spec in sorted(self.handlers.items()):
            timeout = self.timeout_for(spec, default_s)
            if timeout is not None and timeout > limit_s:
                logger.warning(
                    "handler %r has timeout_s=%g, longer than the broker's consumer timeout "
                    "(%gs, consumer_timeout_s): RabbitMQ would close the channel and redeliver "
                    "the job before the handler times out",
                    name,
                    timeout,
                    limit_s,
                )
