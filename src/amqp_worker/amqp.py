"""``AMQPWorker``: the RabbitMQ-backed :class:`~amqp_worker.Worker`.

Publishing (``perform*``) works without :meth:`AMQPWorker.start`: the first
perform connects, declares the target queue, and waits for the broker's
confirm. :meth:`AMQPWorker.start` is what consumes.

Delivery is at-least-once. A message is acked only after its handler
succeeded or after it was safely parked in its failed-jobs queue (confirmed);
anything this process could not finish goes back to RabbitMQ.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Self, Unpack

import aio_pika.exceptions as aio_pika_errors
import aiormq.exceptions as amqp_errors
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    ExchangeType,
)
from pydantic import ValidationError

from .base import BaseWorker
from .broker import Broker, raise_first
from .defaults import DEFAULT_STOP_TIMEOUT_S
from .errors import (
    BrokerError,
    ConfigurationError,
    HandlerNotRegistered,
    PublishReturned,
)
from .failed import FailedJobs
from .failures import (
    HISTORY_HEADER,
    AttemptRecord,
    FailedJob,
    FailureReason,
    failure_headers,
    history_from_headers,
    history_header,
)
from .job import Job
from .messages import ATTEMPT_HEADER, DUE_HEADER, job_message, republish_headers
from .retry import RetryPolicy
from .settings import AMQPSettings, WorkerOptions, build_settings

__all__ = ["AMQPWorker", "WorkerOptions"]

logger = logging.getLogger("amqp_worker")

#: Wait before handing back a message that could not be parked, so it cannot spin.
PARK_RETRY_PAUSE_S = 1.0
#: At most one "holding too many delayed jobs" warning per this many seconds.
HOLD_WARNING_INTERVAL_S = 60.0


def _now_ms() -> float:
    return time.time() * 1000


class AMQPWorker(BaseWorker):
    """Runs jobs from durable RabbitMQ queues; publishes persistent, confirmed jobs.

    ``url``, ``settings`` and keyword options combine: explicit options win,
    then ``settings``, then ``AMQP_WORKER_*`` environment variables, then
    defaults. Bad values raise :class:`~amqp_worker.errors.ConfigurationError`.

    Pass ``connection`` to reuse an aio-pika connection (make it with
    ``connect_robust`` to keep reconnects); the worker then never closes it.
    Pass ``ssl_context`` with an ``amqps://`` URL for custom TLS. ``retry``
    and ``timeout_s`` are the defaults of handlers registered without their own.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: AMQPSettings | None = None,
        connection: AbstractConnection | None = None,
        ssl_context: ssl.SSLContext | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        self.settings = build_settings(url, settings, options)
        super().__init__(
            max_concurrency=self.settings.max_concurrency, retry=retry, timeout_s=timeout_s
        )
        self.topology = self.settings.topology
        self._broker = Broker(self.settings, connection=connection, ssl_context=ssl_context)
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._held: dict[int, tuple[asyncio.TimerHandle, str, AbstractIncomingMessage]] = {}
        self._hold_warned_at = -math.inf
        self._settling: set[asyncio.Task[None]] = set()

    def _copy(self, overrides: dict[str, Any]) -> Self:
        fixed = sorted({"settings", "connection", "ssl_context"} & set(overrides))
        if fixed:
            raise ConfigurationError(
                f"with_options cannot change {', '.join(fixed)}; make a new AMQPWorker"
            )
        extra = dict(overrides)
        url = extra.pop("url", None)
        if url is not None and self._broker.given_connection is not None:
            raise ConfigurationError("url cannot apply: this worker was given its own connection")
        return type(self)(
            url,
            settings=self.settings,
            connection=self._broker.given_connection,
            ssl_context=self._broker.ssl_context,
            retry=extra.pop("retry", self.retry),
            timeout_s=extra.pop("timeout_s", self.timeout_s),
            **extra,
        )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<AMQPWorker {state} {self.settings.broker} name={self.settings.name!r} "
            f"queues={list(self.settings.queues)!r}>"
        )

    @property
    def broker(self) -> Broker:
        """The connection and publishing side, for tools and tests."""
        return self._broker

    # -- publishing -------------------------------------------------------------

    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        if delay_s <= 0:
            await self._publish_now(job, headers)
        else:
            await self._publish_delayed(job, math.ceil(_now_ms() + delay_s * 1000), headers)
        return job.id

    async def _publish_now(self, job: Job, headers: dict[str, Any] | None = None) -> None:
        def build() -> tuple[str, Message]:
            return self.topology.exchange, job_message(job, headers=headers)

        await self._with_declared(
            job.queue, lambda: self._broker.ensure_work_queue(job.queue), build
        )

    async def _publish_delayed(
        self, job: Job, due_ms: int, headers: dict[str, Any] | None = None
    ) -> None:
        def build() -> tuple[str, Message]:
            # Routed from the time left *now*: the first delayed publish declares the
            # whole delay topology, which can take longer than a short delay.
            route = self.topology.delay_route(due_ms - _now_ms())
            extra = {**(headers or {}), **route.headers}
            return route.exchange, job_message(job, headers=extra, due_ms=due_ms)

        await self._with_declared(
            job.queue, lambda: self._broker.ensure_due_queue(job.queue), build
        )

    async def _with_declared(
        self,
        queue: str,
        declare: Callable[[], Awaitable[None]],
        build: Callable[[], tuple[str, Message]],
    ) -> None:
        """Declare what ``queue`` needs, then build and publish its message.

        The message is built after the declare, so anything time-based in it
        (the delay route) is computed from the moment it is published.
        """
        await declare()
        exchange, message = build()
        try:
            await self._broker.publish(exchange, queue, message)
        except PublishReturned:
            # Someone deleted the queue since we declared it: declare again, publish once more.
            self._broker.forget(queue)
            await declare()
            exchange, message = build()
            await self._broker.publish(exchange, queue, message)

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue many jobs with pipelined publisher confirms; return their ids.

        Returns once every job is confirmed. If any was not, raises a
        :class:`~amqp_worker.errors.PublishError` whose ``job_ids`` lists those
        jobs; the others are enqueued.
        """
        outgoing = [self._outgoing(job) for job in jobs]
        for queue in dict.fromkeys(job.queue for job in outgoing):
            await self._broker.ensure_work_queue(queue)
        results = await self._broker.publish_confirmed(
            (
                self.topology.exchange,
                job.queue,
                job_message(job, headers=self.hooks.publishing(job)),
            )
            for job in outgoing
        )
        ids = [job.id for job in outgoing]
        raise_first(results, ids)
        return ids

    # -- failed jobs --------------------------------------------------------------

    @property
    def failed(self) -> FailedJobs:
        """Operations on the failed-jobs queues of this worker's ``queues``."""
        return FailedJobs(self._broker, self.settings.queues)

    async def failed_jobs(
        self, queue: str | None = None, limit: int | None = None
    ) -> list[FailedJob]:
        """Parked jobs, oldest first, of ``queue`` or of all this worker's queues."""
        return await self.failed.list(queue, limit)

    async def retry_failed(
        self, ids: Iterable[str] | None = None, queue: str | None = None
    ) -> list[str]:
        """Move parked jobs back to their work queues with ``attempt`` reset; None: all."""
        return await self.failed.retry(ids, queue)

    async def purge_failed(self, ids: Iterable[str] | None = None, queue: str | None = None) -> int:
        """Delete parked jobs; None deletes all. Return how many."""
        return await self.failed.purge(ids, queue)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect, declare this worker's queues, and consume them."""
        if self._running:
            return
        settings, topology = self.settings, self.topology
        await self._broker.connect()
        self._pool.open()
        self._running = True
        try:
            work = await self._broker.channel()
            due = await self._broker.channel()
            self._channels = [work, due]
            await work.set_qos(prefetch_count=settings.effective_prefetch)
            # Held jobs wait unacked on their own channel, so they never use up the
            # prefetch of ordinary jobs, and ordinary jobs never delay them.
            await due.set_qos(prefetch_count=settings.delay_prefetch)
            for queue in settings.queues:
                await self._broker.ensure_failed_queue(queue)
                await self._broker.ensure_due_queue(queue)
                await self._broker.declare_exchange(topology.exchange, ExchangeType.DIRECT, work)
                work_queue = await self._broker.declare_queue(
                    topology.work_queue(queue),
                    topology.work_queue_arguments(),
                    [(topology.exchange, queue, None)],
                    channel=work,
                )
                due_queue = await self._broker.declare_queue(
                    topology.due_queue(queue), topology.work_queue_arguments(), channel=due
                )
                for consumed, callback in (
                    (work_queue, functools.partial(self._on_message, queue)),
                    (due_queue, functools.partial(self._on_due, queue)),
                ):
                    tag = await consumed.consume(callback)
                    self._consumers.append((consumed, tag))
        except BaseException:
            await self.stop(timeout_s=0)
            raise
        self._warn_long_timeouts()
        logger.info(
            "worker started: %s queues=%s handlers=%s max_concurrency=%d prefetch=%d",
            settings.broker,
            ",".join(settings.queues),
            ",".join(self.handlers) or "-",
            settings.max_concurrency,
            settings.effective_prefetch,
        )

    def _warn_long_timeouts(self) -> None:
        limit = self.settings.consumer_timeout_s
        if limit is None:
            return
        for name, spec in sorted(self._handlers.items()):
            timeout = self._timeout_for(spec)
            if timeout is not None and timeout > limit:
                logger.warning(
                    "handler %r has timeout_s=%g, longer than the broker's consumer timeout "
                    "(%gs, consumer_timeout_s): RabbitMQ would close the channel and redeliver "
                    "the job before the handler times out",
                    name,
                    timeout,
                    limit,
                )

    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop consuming, let running handlers finish, hand the rest back to RabbitMQ.

        Prefetched jobs that never started and delayed jobs held for later are
        nacked with requeue, so none is lost and none runs twice here. Closes
        the connection only if the worker opened it. Also closes the publishing
        connection of a worker that was never started.
        """
        was_running, self._running = self._running, False
        if was_running:
            for queue, tag in self._consumers:
                await self._settle(queue.cancel(tag), "cancel consumer")
            self._consumers.clear()
            held = list(self._held.values())
            self._held.clear()
            for timer, _, message in held:
                timer.cancel()
                self._hand_back(message)
            await self._drain(timeout_s)
            while self._settling:
                await asyncio.gather(*self._settling, return_exceptions=True)
        channels, self._channels = self._channels, []
        for channel in channels:
            if not channel.is_closed:
                await self._settle(channel.close(), "close channel")
        await self._broker.close()

    # -- consuming ------------------------------------------------------------------

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        self._accept(queue, message)

    async def _on_due(self, queue: str, message: AbstractIncomingMessage) -> None:
        self._schedule(queue, message)

    def _schedule(self, queue: str, message: AbstractIncomingMessage) -> None:
        """Run a delayed job if due; hold it if due within the window; else send it round again."""
        due_ms = (message.headers or {}).get(DUE_HEADER)
        if not isinstance(due_ms, int | float) or isinstance(due_ms, bool):
            self._accept(queue, message)  # no due time: run it now
            return
        remaining_ms = due_ms - _now_ms()
        if remaining_ms <= 0:
            self._accept(queue, message)
        elif remaining_ms > 2 * self.settings.delay_window_ms:
            # Far from due (a delay longer than one pass of the topology, or clock skew):
            # send it round again rather than hold it in memory.
            self._track(self._redelay(queue, message, int(due_ms)))
        else:
            key = id(message)
            loop = asyncio.get_running_loop()
            timer = loop.call_later(remaining_ms / 1000, self._release, key)
            self._held[key] = (timer, queue, message)
            if len(self._held) >= self.settings.delay_prefetch:
                self._warn_full_hold(loop.time())

    def _warn_full_hold(self, now: float) -> None:
        # At the limit, RabbitMQ stops delivering due jobs to this worker until some
        # run: with more jobs due within one window than that, they start late.
        if now - self._hold_warned_at < HOLD_WARNING_INTERVAL_S:
            return
        self._hold_warned_at = now
        logger.warning(
            "holding %d delayed jobs, the delay_prefetch limit: jobs due within "
            "delay_window_ms=%d may start late; raise delay_prefetch or run more workers",
            len(self._held),
            self.settings.delay_window_ms,
        )

    def _release(self, key: int) -> None:
        entry = self._held.pop(key, None)
        if entry is not None and self._running:
            _, queue, message = entry
            # Check the wall clock again: a timer may fire a hair early, a job never may.
            self._schedule(queue, message)

    def _decode(self, queue: str, message: AbstractIncomingMessage) -> Job | None:
        try:
            return Job.from_json(message.body)
        except ValidationError as exc:
            bad_json = any(err["type"] == "json_invalid" for err in exc.errors())
            reason = FailureReason.INVALID_JSON if bad_json else FailureReason.INVALID_JOB
            self._track(self._park(queue, message, reason, exc))
            return None

    def _accept(self, queue: str, message: AbstractIncomingMessage) -> None:
        job = self._decode(queue, message)
        if job is None:
            return
        if job.handler not in self._handlers:
            self._track(
                self._park(
                    queue,
                    message,
                    FailureReason.UNKNOWN_HANDLER,
                    HandlerNotRegistered(job.handler),
                    job,
                )
            )
            return
        self._pool.submit(
            lambda: self._run(queue, message, job), on_abandon=lambda: self._hand_back(message)
        )

    async def _run(self, queue: str, message: AbstractIncomingMessage, job: Job) -> None:
        if _stale(message):
            return  # its channel closed since delivery: RabbitMQ redelivers it
        try:
            headers = message.headers or {}
            outcome = await self._attempt(job, queue, headers)
            if outcome.error is None:
                await self._settle(message.ack(), f"ack job {job.id}")
                return
            decision = self._decide(job, outcome.error)
            await self._failed_attempt(job, queue, outcome, decision, headers)
            history = [
                *history_from_headers(message.headers),
                AttemptRecord.of(job.attempt, outcome.error),
            ]
            if decision.retry:
                await self._retry(queue, message, job, decision.delay_s, history)
            else:
                await self._park(queue, message, decision.reason, outcome.error, job, history)
            await self._linger(outcome)
        except asyncio.CancelledError:
            # Stopped before the job was settled: RabbitMQ gets it back (a second
            # nack after an ack is refused and only logged).
            if not message.processed:
                self._hand_back(message)
            raise

    async def _retry(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        job: Job,
        delay_s: float,
        history: list[AttemptRecord],
    ) -> None:
        """Re-publish ``job`` with ``attempt + 1`` through the delay topology; then ack it."""
        retry = job.model_copy(update={"attempt": job.attempt + 1})
        headers = _carried_headers(message.headers)
        headers[HISTORY_HEADER] = history_header(history)
        try:
            if delay_s > 0:
                await self._publish_delayed(retry, math.ceil(_now_ms() + delay_s * 1000), headers)
            else:
                await self._publish_now(retry, headers)
        except BrokerError as error:
            logger.error("could not retry job %s (%s); handing it back", job.id, error)
            await asyncio.sleep(PARK_RETRY_PAUSE_S)
            self._hand_back(message)
            return
        # Only now, with the retry confirmed by the broker, is the original let go.
        await self._settle(message.ack(), f"ack retried job {job.id}")

    async def _park(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        reason: FailureReason,
        exc: BaseException,
        job: Job | None = None,
        history: list[AttemptRecord] | None = None,
    ) -> None:
        """Move ``message`` to ``queue``'s failed-jobs queue with the reason, then ack it."""
        failed_queue = self.topology.failed_queue(queue)
        what = f"job {job.id}" if job else f"message {message.message_id or '(no id)'}"
        parked = Message(
            message.body,
            headers={
                **_carried_headers(message.headers),
                **failure_headers(reason, queue, exc, history=history or ()),
            },
            content_type=message.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=job.id if job else message.message_id,
            type=message.type,
            timestamp=message.timestamp,
        )
        try:
            await self._broker.ensure_failed_queue(queue)
            await self._broker.publish("", failed_queue, parked)
        except BrokerError as error:
            logger.error(
                "could not park %s in %s (%s); handing it back to RabbitMQ",
                what,
                failed_queue,
                error,
            )
            await asyncio.sleep(PARK_RETRY_PAUSE_S)
            self._hand_back(message)
            return
        log = logger.error if reason is FailureReason.UNKNOWN_HANDLER else logger.warning
        log(
            "%s parked in %s: %s: %s",
            what,
            failed_queue,
            reason.value,
            exc,
            extra={"job_id": job.id if job else None, "queue": queue, "reason": reason.value},
        )
        await self._settle(message.ack(), f"ack parked {what}")
        job_id = job.id if job else (message.message_id or "")
        await self._parked(queue, job, job_id, reason, exc, message.headers or {})

    async def _redelay(self, queue: str, message: AbstractIncomingMessage, due_ms: int) -> None:
        job = self._decode(queue, message)
        if job is None:
            return
        try:
            await self._publish_delayed(job, due_ms, _carried_headers(message.headers))
        except BrokerError as error:
            logger.warning("could not re-delay job %s (%s); handing it back", job.id, error)
            self._hand_back(message)
            return
        await self._settle(message.ack(), f"ack re-delayed job {job.id}")

    # -- settling messages ------------------------------------------------------------

    def _track(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _hand_back(self, message: AbstractIncomingMessage) -> None:
        """Return an unfinished message to RabbitMQ (nack, requeue); it is redelivered."""
        self._track(self._settle(message.nack(requeue=True), "hand back a message"))

    async def _settle(self, action: Awaitable[Any], what: str) -> None:
        try:
            await action
        except (amqp_errors.AMQPError, aio_pika_errors.MessageProcessError, RuntimeError) as exc:
            # The channel is gone (reconnect or shutdown): RabbitMQ already requeued the
            # message, and acking it on a new channel would hit the wrong delivery tag.
            logger.warning("could not %s: %s; RabbitMQ redelivers it", what, type(exc).__name__)


def _carried_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers a re-published job keeps: its own and the user's, not its old route or due time."""
    return {
        key: value
        for key, value in republish_headers(headers).items()
        if not key.startswith("aw-delay-") and key not in (DUE_HEADER, ATTEMPT_HEADER)
    }


def _stale(message: AbstractIncomingMessage) -> bool:
    """True if the channel that delivered ``message`` is closed (it will be redelivered)."""
    try:
        message.channel  # noqa: B018 - raises once that channel is closed
    except (amqp_errors.ChannelInvalidStateError, RuntimeError):
        return True
    return False
