"""Batched publishing against a real RabbitMQ: each publish of a batch gets its own outcome.

The publishes of one loop pass go out in one write and are confirmed as a
batch (amqp_worker._rabbitmq.confirms). These tests make the broker nack
and return publishes in the middle of such a batch, and cut the connection
while batches wait for their confirms: exactly the refused publishes fail,
and nothing confirmed is lost.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import aio_pika
import pytest

from amqp_worker import Job, PublishError, PublishNacked, PublishReturned
from amqp_worker._rabbitmq.confirmed import Publish
from amqp_worker._rabbitmq.messages import job_message
from tests.amqp.conftest import Workers
from tests.harness.brokertools import BROKER_URL, drain, queue_state
from tests.harness.tcp_proxy import TcpProxy

pytestmark = pytest.mark.broker


def jobs(n: int, queue: str = "default") -> list[Job]:
    return [Job(handler="h", queue=queue, args={"n": i}) for i in range(n)]


async def test_a_nack_in_the_middle_of_a_batch_fails_exactly_those_publishes(
    workers: Workers,
) -> None:
    full = await workers.full_queue(3)
    publisher = workers()
    batch = jobs(6)
    results = await publisher._broker.publish_all(
        [("", full, job_message(job)) for job in batch], in_flight=256
    )
    assert [r is None for r in results] == [True, True, True, False, False, False]
    assert all(isinstance(r, PublishNacked) for r in results[3:])
    assert [r.job_ids for r in results[3:] if isinstance(r, PublishNacked)] == [
        (job.id,) for job in batch[3:]
    ]
    kept = [json.loads(m["body"])["id"] for m in await drain(full)]
    assert kept == [job.id for job in batch[:3]]
    await publisher.stop()


async def test_concurrent_publishes_share_a_batch_and_a_nack_fails_only_its_own(
    workers: Workers,
) -> None:
    full = await workers.full_queue(3)
    publisher = workers()
    await publisher._broker.connect()
    batch = jobs(6)
    # Started in one loop pass: one write, one batch.
    outcomes = await asyncio.gather(
        *(publisher._broker.publish("", full, job_message(job)) for job in batch),
        return_exceptions=True,
    )
    assert [o is None for o in outcomes] == [True, True, True, False, False, False]
    assert all(isinstance(o, PublishNacked) for o in outcomes[3:])
    # The nack retired that channel; the next publish goes out on a fresh one.
    await drain(full)
    await publisher._broker.publish("", full, job_message(Job(handler="h")))
    assert await queue_state(full) == (1, 0)
    await publisher.stop()


async def test_a_return_in_the_middle_of_a_batch_fails_only_that_publish(
    workers: Workers,
) -> None:
    publisher = workers()
    await publisher._broker.declarations.ensure_work_queue(workers.queue)
    exchange = publisher.topology.exchange
    batch = jobs(5)
    publishes: list[Publish] = [
        (exchange, "no-such-binding" if i == 2 else workers.queue, job_message(job))
        for i, job in enumerate(batch)
    ]
    results = await publisher._broker.publish_all(publishes, in_flight=256)
    assert [r is None for r in results] == [True, True, False, True, True]
    assert isinstance(results[2], PublishReturned)
    assert results[2].job_ids == (batch[2].id,)
    work = publisher.topology.work_queue(workers.queue)
    kept = [json.loads(m["body"])["id"] for m in await drain(work)]
    assert kept == [job.id for i, job in enumerate(batch) if i != 2]
    await publisher.stop()


async def test_perform_many_names_the_refused_jobs_and_enqueues_the_rest(
    workers: Workers,
) -> None:
    full = await workers.full_queue(3)
    publisher = workers()
    workers.extra_queues += workers.topology.queues_of("to-full")
    # Jobs for queue "to-full" reach its work queue and, by a binding, the full queue,
    # which refuses all but three: a publish refused by any queue is nacked.
    await publisher._broker.declarations.ensure_work_queue("to-full")
    async with await aio_pika.connect(BROKER_URL) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(full)
        await queue.bind(publisher.topology.exchange, "to-full")
    batch = [Job(handler="h", queue="to-full", args={"n": i}) for i in range(5)]
    with pytest.raises(PublishError) as info:
        await publisher.perform_many(batch)
    assert set(info.value.job_ids) == {job.id for job in batch[3:]}
    await publisher.stop()


@pytest.mark.timeout(120)
async def test_a_connection_lost_under_batches_in_flight_loses_no_confirmed_job(
    workers: Workers,
) -> None:
    broker = urlsplit(BROKER_URL)
    proxy = await TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672).start()
    url = f"amqp://{broker.username}:{broker.password}@127.0.0.1:{proxy.port}/"
    publisher = workers(url=url, publish_timeout_s=60, reconnect_interval_s=0.1)
    await publisher._broker.declarations.ensure_work_queue(workers.queue)
    window = publisher._broker._confirmed

    async def cut_while_unconfirmed() -> None:
        # Once batches are written and wait for their confirms: reset the connection.
        while not (window._window is not None and window._window._unconfirmed):  # noqa: ASYNC110
            await asyncio.sleep(0)
        await proxy.drop_all()

    many = jobs(2000, workers.queue)
    single = jobs(200, workers.queue)
    try:
        cutter = asyncio.create_task(cut_while_unconfirmed())
        ids = await publisher.perform_many(many)
        await cutter
        cutter = asyncio.create_task(cut_while_unconfirmed())
        await asyncio.gather(*(publisher.perform(job) for job in single))
        await cutter
    finally:
        await publisher.stop()
        await proxy.close()
    assert proxy.drops == 2
    assert ids == [job.id for job in many]
    work = publisher.topology.work_queue(workers.queue)
    kept = {json.loads(m["body"])["id"] for m in await drain(work)}
    # Every job was confirmed: each is there (some maybe twice: at least once).
    assert {job.id for job in many + single} <= kept
