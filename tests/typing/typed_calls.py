"""Right and wrong typed enqueues, for mypy (tests/core/test_typed_enqueue.py runs it).

Each line mypy must reject ends with ``# rejected``; no other line may be.
This file is type-checked, never run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job, JobHandle, JobRef, SimpleWorker, chain, group


class Email(BaseModel):
    user_id: int
    subject: str = "hello"


class Other(BaseModel):
    name: str


worker = SimpleWorker()


@worker.handler("send_email")
async def send_email(args: Email) -> None:
    pass


@worker.handler("untyped")
async def untyped(args: dict[str, Any]) -> None:
    pass


async def calls() -> None:
    await send_email.perform(Email(user_id=1))
    await send_email.perform(Email(user_id=1), queue="priority")
    await send_email.perform_in(Email(user_id=1), timedelta(minutes=5))
    await send_email.perform_in(Email(user_id=1), 30.0)
    await send_email.perform_at(Email(user_id=1), datetime(2030, 1, 1, tzinfo=UTC))
    await send_email(Email(user_id=2))  # still callable like the function
    await untyped({"any": "thing"})  # an untyped handler comes back unchanged
    await worker.perform(Job(handler="untyped", args={"x": 1}))  # the untyped way stays

    await send_email.perform({"user": 1})  # rejected
    await send_email.perform(Other(name="x"))  # rejected
    await send_email.perform(Email(user_id=1), queue=3)  # rejected
    await send_email.perform_in(Email(user_id=1), "5m")  # rejected
    await send_email.perform_at(Other(name="x"), datetime.now(UTC))  # rejected
    await send_email(Other(name="x"))  # rejected
    await untyped.perform({"x": 1})  # rejected


# A publish-only service: the name and the model, no handler code.
send_email_ref = JobRef("send_email", Email, queue="emails")
publisher = AMQPWorker("amqp://guest:guest@localhost/")


async def publish() -> None:
    await send_email_ref.perform(Email(user_id=1), worker=publisher)
    await send_email_ref.bind(publisher).perform_in(Email(user_id=1), 60)
    job: Job = send_email_ref.job(Email(user_id=1))
    await publisher.perform(job)

    await send_email_ref.perform(Other(name="x"), worker=publisher)  # rejected
    await send_email_ref.perform(Email(user_id=1))  # rejected
    await send_email_ref.bind(publisher).perform({"user_id": 1})  # rejected
    JobRef("send_email", dict)  # rejected


class Receipt(BaseModel):
    sent: int


@worker.handler("count", result=True)
async def count(args: Email) -> Receipt:
    return Receipt(sent=args.user_id)


async def workflows() -> None:
    # A chain's and a group's steps are built by the typed references: mypy checks their args.
    last: JobHandle = await worker.perform_chain(
        chain(send_email.job(Email(user_id=1)), count.job(Email(user_id=2)))
    )
    receipt: Receipt = await last.result(timeout_s=5, model=Receipt)
    plain: object = await last.result()
    members = group(
        [count.job(Email(user_id=n)) for n in range(3)], then=send_email.job(Email(user_id=9))
    )
    done = await worker.perform_group(members)
    handle: JobHandle = await count.perform(Email(user_id=3))
    by_id: JobHandle = worker.handle(handle.id)
    del receipt, plain, done, by_id

    chain(send_email.job(Other(name="x")))  # rejected
    chain(count.job({"user_id": 1}))  # rejected
    group([count.job(Email(user_id=1))], then=Email(user_id=1))  # rejected
    bad: Other = await last.result(model=Receipt)  # rejected
    del bad
