"""Results, chains and groups: the same contract on every worker (SimpleWorker,
TimeTravelWorker, AMQPWorker).

Waits use generous guards against hangs; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_worker import (
    FailureReason,
    GroupExists,
    JobFailed,
    ResultTimeout,
    RetryPolicy,
    Topology,
    Worker,
    chain,
    group,
)
from tests.conftest import SESSION_NAME, WorkerKit
from tests.harness.brokertools import delete_queues

GUARD_S = 30.0
NO_RETRY = RetryPolicy(max_retries=0)
#: The kits' queues whose ``fail`` jobs (args ``{"queue": ...}``) succeed from now on.
FIXED: set[str] = set()


class Total(BaseModel):
    total: int


def arithmetic(worker: Worker) -> list[tuple[str, dict[str, Any]]]:
    """Registers ``add`` (keeps its result), ``fail`` (parks at once) and ``record``; returns the log."""
    log: list[tuple[str, dict[str, Any]]] = []

    @worker.handler("add", result=True)
    async def add(args: dict[str, Any]) -> int:
        log.append(("add", args))
        return int(args["a"]) + int(args.get("b", 0))

    @worker.handler("total", result=True)
    def total(args: dict[str, Any]) -> Total:  # a sync handler, in a thread
        log.append(("total", args))
        return Total(total=sum(args["values"]))

    async def record(args: dict[str, Any]) -> None:
        log.append(("record", args))

    async def fail(args: dict[str, Any]) -> None:
        log.append(("fail", args))
        if args.get("queue") not in FIXED:
            raise RuntimeError("broken on purpose")

    worker.register("record", record)
    worker.register("fail", fail, retry=NO_RETRY, result=True)
    return log


async def until(predicate: Any) -> None:
    async def poll() -> None:
        while not predicate():  # noqa: ASYNC110 - the handlers set nothing to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), GUARD_S)


# -- results --------------------------------------------------------------------


async def test_perform_returns_the_id_that_waits_for_the_result(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    job = kit.job("add", {"a": 2, "b": 3})
    async with worker:
        handle = await worker.perform(job)
        assert handle == job.id
        assert handle.id == job.id
        assert isinstance(handle, str)
        assert await handle.result(GUARD_S) == 5
        record = await handle.outcome(GUARD_S)
        assert (record.status, record.handler, record.queue) == ("succeeded", "add", kit.queue)


async def test_a_result_is_serialised_by_the_return_annotation(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    async with worker:
        handle = await worker.perform(kit.job("total", {"values": [1, 2, 3]}))
        assert await handle.result(GUARD_S) == {"total": 6}
        assert await handle.result(GUARD_S, model=Total) == Total(total=6)


async def test_a_handle_made_from_the_id_alone_finds_the_result(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    async with worker:
        handle = await worker.perform(kit.job("add", {"a": 40, "b": 2}))
        await handle.result(GUARD_S)
        assert await worker.handle(str(handle)).result(GUARD_S) == 42


async def test_a_parked_job_leaves_its_failure_record(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    async with worker:
        handle = await worker.perform(kit.job("fail"))
        with pytest.raises(JobFailed, match="broken on purpose") as failed:
            await handle.result(GUARD_S)
        assert failed.value.result.reason == FailureReason.HANDLER_ERROR.value


async def test_a_result_that_is_not_json_parks_the_job(kit: WorkerKit) -> None:
    worker = kit.make()

    @worker.handler("odd", result=True)
    async def odd(args: dict[str, Any]):  # type: ignore[no-untyped-def]
        return object()  # no JSON for that

    async with worker:
        handle = await worker.perform(kit.job("odd"))
        with pytest.raises(JobFailed) as failed:
            await handle.result(GUARD_S)
        assert failed.value.result.reason == FailureReason.INVALID_RESULT.value
        parked = await worker.failed.show(handle.id)
        assert parked.reason == FailureReason.INVALID_RESULT


async def test_a_handler_that_keeps_no_result_leaves_none(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    async with worker:
        handle = await worker.perform(kit.job("record"))
        with pytest.raises(ResultTimeout):
            await handle.result(timeout_s=0.5)


# -- chains ---------------------------------------------------------------------


async def test_a_chain_runs_in_order_passing_results_on(kit: WorkerKit) -> None:
    worker = kit.make()
    log = arithmetic(worker)
    steps = chain(
        kit.job("add", {"a": 1}),
        kit.job("add", {"a": 10}),
        kit.job("add", {"a": 100}),
        result_into="b",
    )
    async with worker:
        last = await worker.perform_chain(steps)
        assert last == steps.last.id
        assert await last.result(GUARD_S) == 111
    assert [args for _, args in log] == [{"a": 1}, {"a": 10, "b": 1}, {"a": 100, "b": 11}]


async def test_a_parked_step_stops_the_chain_and_its_retry_continues_it(kit: WorkerKit) -> None:
    worker = kit.make()
    log = arithmetic(worker)
    broken = kit.job("fail", {"queue": kit.queue})
    steps = chain(kit.job("record", {"n": 1}), broken, kit.job("record", {"n": 3}))
    async with worker:
        await worker.perform_chain(steps)
        parked = await asyncio.wait_for(_parked(worker, broken.id), GUARD_S)
        assert parked.job is not None
        assert parked.job.chain is not None
        assert (parked.job.chain.id, parked.job.chain.step) == (steps.id, 1)
        assert [name for name, _ in log] == ["record", "fail"]
        # Retried as it was parked: fixed now, it runs and the chain goes on.
        FIXED.add(kit.queue)
        await worker.failed.retry([broken.id])
        await until(lambda: len(log) == 4)
    assert [args.get("n") for name, args in log if name == "record"] == [1, 3]


async def _parked(worker: Worker, job_id: str) -> Any:
    while True:
        found = [job for job in await worker.failed.list() if job.id == job_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)


# -- groups ---------------------------------------------------------------------


async def test_a_group_callback_runs_once_after_every_member(kit: WorkerKit) -> None:
    worker = kit.make()
    log = arithmetic(worker)
    members = [kit.job("add", {"a": n}) for n in range(20)]
    async with worker:
        handle = await worker.perform_group(group(members, then=kit.job("record", {"done": 1})))
        status = await handle.wait(GUARD_S)
        assert (status.state, status.size, status.succeeded, status.parked) == (
            "finished",
            20,
            20,
            [],
        )
        assert await handle.results(GUARD_S) == list(range(20))
        await until(lambda: ("record", {"done": 1}) in log)
        assert handle.then is not None
    assert [name for name, _ in log].count("record") == 1
    assert (await worker.group_status(handle.id)).state == "finished"


async def test_a_parked_member_holds_the_callback_until_it_is_retried(kit: WorkerKit) -> None:
    worker = kit.make()
    log = arithmetic(worker)
    broken = kit.job("fail", {"queue": kit.queue})
    members = [kit.job("add", {"a": 1}), broken, kit.job("add", {"a": 2})]
    async with worker:
        handle = await worker.perform_group(group(members, then=kit.job("record")))
        status = await handle.wait(GUARD_S)
        assert status.state == "failed"
        assert [(m.index, m.job_id, m.reason) for m in status.parked] == [
            (1, broken.id, "handler_error")
        ]
        assert "record" not in [name for name, _ in log]
        # The group hears of a parked member just before it is in the failed jobs.
        await asyncio.wait_for(_parked(worker, broken.id), GUARD_S)
        FIXED.add(kit.queue)
        await worker.failed.retry([broken.id])
        await until(lambda: "record" in [name for name, _ in log])
        assert (await handle.wait(GUARD_S)).state == "finished"
    assert [name for name, _ in log].count("record") == 1


async def test_then_if_failed_runs_the_callback_after_a_parked_member(kit: WorkerKit) -> None:
    worker = kit.make()
    log = arithmetic(worker)
    members = [kit.job("add", {"a": 1}), kit.job("fail")]
    async with worker:
        handle = await worker.perform_group(
            group(members, then=kit.job("record"), then_if_failed=True)
        )
        await until(lambda: "record" in [name for name, _ in log])
        status = await handle.wait(GUARD_S)
        assert (status.state, status.succeeded, len(status.parked)) == ("finished", 1, 1)


async def test_an_open_group_id_cannot_be_used_again(kit: WorkerKit) -> None:
    worker = kit.make()
    arithmetic(worker)
    members = [kit.job("add", {"a": 1})]
    gid = f"g-{kit.queue}"
    # Not started: the group stays open with its member waiting.
    await worker.perform_group(group(members, group_id=gid))
    assert (await worker.group_status(gid)).state == "open"
    try:
        with pytest.raises(GroupExists, match=gid):
            await worker.perform_group(group([kit.job("add", {"a": 2})], group_id=gid))
    finally:
        if kit.kind == "amqp":
            await delete_queues([Topology(name=SESSION_NAME).group_queue(gid)])


async def test_an_unknown_group_is_unknown(kit: WorkerKit) -> None:
    worker = kit.make()
    status = await worker.group_status(f"nobody-{kit.queue}")
    assert (status.state, status.size) == ("unknown", 0)
