"""``AMQPWorker``: the RabbitMQ-backed :class:`~amqp_worker.Worker`.

Publishing (``perform*``) works without :meth:`AMQPWorker.start`: the first
perform connects, declares the target queue, and waits for the broker's
confirm. :meth:`AMQPWorker.start` is what consumes.

Delivery is at-least-once. A message is acked only after its handler
succeeded or after it was safely parked in its failed-jobs queue (confirmed);
anything this process could not finish goes back to RabbitMQ.

This class only orchestrates; the parts live in their own modules (broker,
publishing, intake, due, messages, settle, acks, consumer...): docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Iterable
from typing import Any, Self, Unpack

from aio_pika.abc import AbstractChannel, AbstractConnection

from amqp_worker._core.attempt import tell_parked
from amqp_worker._core.base import BaseWorker
from amqp_worker._core.defaults import DEFAULT_STOP_TIMEOUT_S
from amqp_worker._core.failures import AttemptRecord, FailureReason, history_from_headers
from amqp_worker._core.interfaces import FailedJobs
from amqp_worker._core.job import Job
from amqp_worker._core.results import JobHandle
from amqp_worker._core.retry import RetryPolicy
from amqp_worker.errors import ConfigurationError

from . import client_logs
from .broker import Broker
from .cancels import RabbitCancelling, RabbitCancels
from .connect import connection_lost
from .consumer import Delivery, QueueConsumer
from .failed_jobs import RabbitFailedJobs
from .groups import RabbitGroups
from .intake import Intake, Received
from .limits import RabbitLimits
from .messages import retry_headers
from .partitions import consume_partitions
from .publishing import JobPublisher, due_in
from .results import RabbitResults
from .schedule_leader import ScheduleLeader
from .settings import AMQPSettings, WorkerOptions, build_settings
from .settle import Settler, stale
from .topology import Topology
from .unique import RabbitLocks
from .workflow_transport import RabbitWorkflows

__all__ = ["AMQPWorker"]

logger = logging.getLogger("amqp_worker")


class AMQPWorker(RabbitCancelling, RabbitWorkflows, BaseWorker[Received]):
    """Runs jobs from durable RabbitMQ queues; publishes persistent, confirmed jobs.

    ``url``, ``settings`` and keyword options combine: explicit options win,
    then ``settings``, then ``AMQP_WORKER_*`` environment variables, then
    defaults. Bad values raise :class:`~amqp_worker.errors.ConfigurationError`.
    Pass ``connection`` to reuse an aio-pika connection (``connect_robust`` keeps
    reconnects); the worker never closes it. Pass ``ssl_context`` with an ``amqps://``
    URL for custom TLS. ``retry`` and ``timeout_s`` are handlers' defaults.
    """

    _transient_start_error = staticmethod(connection_lost)

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
        """The immutable settings this worker was built with."""
        super().__init__(
            max_concurrency=self.settings.max_concurrency,
            retry=retry,
            timeout_s=timeout_s,
            loop_stall_warn_s=self.settings.loop_stall_warn_s,
            default_queue=self.settings.queues[0],
            cancel_ttl_s=self.settings.cancel_ttl_s,
        )
        self._max_message_bytes = self.settings.max_message_bytes
        self._broker = Broker(self.settings, connection=connection, ssl_context=ssl_context)
        self._publisher = JobPublisher(self._broker)
        self._results = RabbitResults(self._broker)
        self._groups = RabbitGroups(self._broker, self._results)
        self._unique_locks = self._locks = RabbitLocks(self._broker, self.settings.unique_for_s)
        self._cancel_stream = RabbitCancels(self._broker, self._cancels)
        self._channels: list[AbstractChannel] = []
        self._consumers: list[QueueConsumer] = []
        self._settler = Settler(self._broker, self._publisher)
        self._limits = RabbitLimits(
            self._broker,
            self._registry,
            self._settler,
            running=lambda: self.running,
            has_room=self._has_room,
        )
        self._intake = Intake(
            self.settings,
            self._registry,
            self._settler,
            run=self._run_later,
            park=self._park_undecoded,
            running=lambda: self.running,
            limits=self._limits,
        )
        self._leader: ScheduleLeader | None = None

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
        state = "running" if self.running else "stopped"
        where = self.node or self.settings.broker
        return (
            f"<AMQPWorker {state} {where} name={self.settings.name!r} "
            f"queues={list(self.settings.queues)!r}>"
        )

    @property
    def node(self) -> str | None:
        """The RabbitMQ node this worker is connected to now (scheme, host, port, vhost), or None.

        With a list of cluster nodes in ``url``, this is the one in use; it
        changes when the worker fails over to another node.
        """
        return self._broker.node if self.connected else None

    @property
    def topology(self) -> Topology:
        """The names and arguments of everything this worker declares on RabbitMQ."""
        return self._broker.topology

    @property
    def connected(self) -> bool:
        """True while this worker has an open connection to RabbitMQ (not reconnecting)."""
        connection = self._broker.connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    # -- publishing -------------------------------------------------------------

    async def _enqueue(self, job: Job, delay_s: float, headers: dict[str, Any]) -> str:
        await self._publisher.publish(job, headers, due_in(delay_s) if delay_s > 0 else None)
        return job.id

    async def perform_many(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue many jobs with pipelined publisher confirms; return their ids.

        Returns once every job is confirmed. If any was not, raises a
        :class:`~amqp_worker.errors.PublishError` whose ``job_ids`` lists those
        jobs; the others are enqueued.
        """
        outgoing = [self._outgoing(job) for job in jobs]
        publishes = [(job, self.hooks.publishing(job)) for job in outgoing]
        await self._enqueue_many_unique(outgoing, lambda: self._publisher.publish_many(publishes))
        return [JobHandle(job.id, self._results, job.enqueued_at) for job in outgoing]

    # -- failed jobs --------------------------------------------------------------

    @property
    def failed(self) -> FailedJobs:
        """The failed-jobs queues of this worker's ``queues``: list, show, retry, purge."""
        return RabbitFailedJobs(self._broker, self.settings.queues)

    # -- lifecycle ----------------------------------------------------------------

    async def _prepare(self) -> None:
        await self._broker.connect()

    async def _begin(self) -> None:
        client_logs.install()  # aio-pika's reconnect noise reads as one WARNING (stop removes it)
        settings = self.settings
        work = await self._broker.channel()
        due = await self._broker.channel()
        quarantine = await self._broker.channel()
        self._channels = [work, due, quarantine]
        await self._cancel_stream.listen()  # caught up before any job is taken (cancels.py)
        await work.set_qos(prefetch_count=settings.effective_prefetch)
        # Held jobs wait unacked on their own channel, so they never use up the
        # prefetch of ordinary jobs, and ordinary jobs never delay them.
        await due.set_qos(prefetch_count=settings.delay_prefetch)
        # One quarantined job at a time: if it kills this worker, it alone comes back
        # from the quarantine queue (see quarantine.py).
        await quarantine.set_qos(prefetch_count=1)
        for queue in settings.queues:
            queues = await self._broker.declarations.consumer_queues(queue, (work, due, quarantine))
            for consumed, channel, callback in zip(
                queues,
                (work, due, quarantine),
                (self._intake.on_message, self._intake.on_due, self._intake.on_quarantined),
                strict=True,
            ):
                consumer = QueueConsumer(channel, consumed.name, functools.partial(callback, queue))
                await consumer.start()
                self._consumers.append(consumer)
        partitioned, consumers = await consume_partitions(
            self._broker, settings.queues, self._intake.on_partitioned
        )
        self._channels += [partitioned] if partitioned is not None else []
        self._consumers += consumers
        channels, consumers = await self._limits.start(settings.queues, self._intake.on_limited)
        self._channels += channels
        self._consumers += consumers
        # Declared after the consumers start: its ~100 round trips overlap the first jobs.
        # A retry or perform_in that needs it meanwhile waits for it (Declarations._once).
        await self._broker.declarations.ensure_delays()
        if self._registry.schedules:
            self._leader = ScheduleLeader(
                self._broker,
                lambda: self._registry.schedules,
                enqueue=self.perform,
                on_tick=self.hooks.ticked,
                leader_name=settings.connection_name,
            )
            await self._leader.start()
        self._registry.warn_timeouts_over(self.settings.consumer_timeout_s, self.timeout_s)
        logger.info(
            "worker started: %s queues=%s handlers=%s max_concurrency=%d prefetch=%d",
            self.node or settings.broker,
            ",".join(settings.queues),
            ",".join(self.handlers) or "-",
            settings.max_concurrency,
            settings.effective_prefetch,
        )

    async def stop(self, timeout_s: float | None = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop consuming, let running handlers finish, hand the rest back to RabbitMQ.

        Prefetched jobs that never started and delayed jobs held for later are
        nacked with requeue, so none is lost and none runs twice here. Closes
        the connection only if the worker opened it. Also closes the publishing
        connection of a worker that was never started.
        """
        was_running = self.running
        try:
            await super().stop(timeout_s)
        finally:
            if was_running:
                client_logs.uninstall()

    async def _end(self, was_running: bool, timeout_s: float | None) -> None:
        leader, self._leader = self._leader, None
        if leader is not None:
            await leader.stop()  # first: no tick may fire while the worker stops
        await self._limits.stop()
        if was_running:
            for consumer in self._consumers:
                await self._settler.settle(consumer.cancel(), "cancel consumer")
            self._consumers.clear()
            for _, message in self._intake.release_held():
                self._settler.hand_back(message)
            await self._drain(timeout_s)
            await self._settler.wait()
        await self._close_errands()
        await self._cancel_stream.close()
        channels, self._channels = self._channels, []
        for channel in channels:
            if not channel.is_closed:
                await self._settler.settle(channel.close(), "close channel")
        await self._broker.close()

    # -- consuming ------------------------------------------------------------------

    def _run_later(self, queue: str, message: Delivery, job: Job) -> None:
        """Give ``job`` a handler slot; hand ``message`` back if stop() drops it unstarted."""
        self._submit_run(
            lambda: self._consume(queue, message, job),
            on_abandon=lambda: self._settler.hand_back(message),
        )

    async def _consume(self, queue: str, message: Delivery, job: Job) -> None:
        if stale(message):
            return  # its channel closed since delivery: RabbitMQ redelivers it
        headers = message.headers or {}
        try:
            await self._run((queue, message), job, queue, headers, history_from_headers(headers))
        except asyncio.CancelledError:
            # Stopped before the job was settled: RabbitMQ gets it back (a second
            # nack after an ack is refused and only logged).
            if not message.processed and not self._settler.ack_queued(message):
                self._settler.hand_back(message)
            raise

    # -- settling an attempt (the transport steps of BaseWorker._run) ---------------

    async def _succeeded(self, delivery: Received, job: Job) -> None:
        await self._settler.ack(delivery[1], f"job {job.id}")

    async def _retry_later(
        self,
        delivery: Received,
        retry: Job,
        queue: str,
        delay_s: float,
        history: list[AttemptRecord],
    ) -> None:
        """Re-publish ``retry`` through the delay topology; then ack the failed delivery."""
        message = delivery[1]
        due_ms = due_in(delay_s) if delay_s > 0 else None
        await self._settler.republish(
            message, retry, retry_headers(message.headers, history), due_ms
        )

    async def _park(
        self,
        delivery: Received,
        job: Job,
        queue: str,
        reason: FailureReason,
        error: BaseException,
        history: list[AttemptRecord],
    ) -> None:
        await self._park_message(queue, delivery[1], reason, error, job, history=history)

    async def _park_message(
        self,
        queue: str,
        message: Delivery,
        reason: FailureReason,
        error: BaseException,
        job: Job | None = None,
        extra_headers: dict[str, Any] | None = None,
        history: list[AttemptRecord] | None = None,
    ) -> None:
        """Park ``message`` in ``queue``'s failed-jobs queue; tell the hooks once it is."""
        if await self._settler.park(queue, message, reason, error, job, history, extra_headers):
            await self._unique_finished(job)
            job_id = job.id if job else (message.message_id or "")
            await tell_parked(self.hooks, queue, job, job_id, reason, error, message.headers or {})
