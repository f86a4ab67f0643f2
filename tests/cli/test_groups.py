"""``amqp-worker groups GROUP_ID``: a group's state, counts and parked members."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest

from amqp_worker import AMQPWorker, Job, PermanentError, group
from amqp_worker.cli import ExitCode
from tests.cli.conftest import UNREACHABLE_URL, Broker, base_env, cli, one_line_error
from tests.harness.brokertools import BROKER_URL, delete_queues

pytestmark = pytest.mark.broker


class Groups:
    """Groups of three members on the test's queue; member 1 is parked when ``broken``."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.ids: list[str] = []

    def gid(self) -> str:
        gid = f"g-{uuid.uuid4().hex[:10]}"
        self.ids.append(gid)
        return gid

    def members(self) -> list[Job]:
        return [Job(handler="m", queue=self.broker.queue, args={"i": i}) for i in range(3)]

    async def _run(self, broken: bool, consume: bool) -> tuple[str, list[str]]:
        worker = AMQPWorker(BROKER_URL, name=self.broker.name, queues=[self.broker.queue])

        async def m(args: dict[str, int]) -> None:
            if broken and args["i"] == 1:
                raise PermanentError("member 1 is broken")

        async def cb(args: dict[str, int]) -> None:
            pass

        worker.register("m", m)
        worker.register("cb", cb)
        members = self.members()
        try:
            then = Job(handler="cb", queue=self.broker.queue)
            handle = await worker.perform_group(group(members, then=then, group_id=self.gid()))
            if consume:
                await worker.start()
                await handle.wait(timeout_s=30)
        finally:
            await worker.stop()
        return handle.id, [job.id for job in members]

    def make(self, *, broken: bool = False, consume: bool = True) -> tuple[str, list[str]]:
        """A group run to its end (or left ``open`` without ``consume``): its id, member ids."""
        return asyncio.run(self._run(broken, consume))

    def close(self) -> None:
        names = [self.broker.topology.group_queue(gid) for gid in self.ids]
        asyncio.run(delete_queues([*names, self.broker.topology.results_stream]))


@pytest.fixture
def groups(broker: Broker) -> Iterator[Groups]:
    made = Groups(broker)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.timeout(90)
def test_a_failed_group_names_its_parked_members(broker: Broker, groups: Groups) -> None:
    gid, ids = groups.make(broken=True)
    result = broker("groups", gid)
    assert result.returncode == ExitCode.FAILURE, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [f"group {gid}: failed", "succeeded: 2/3", "pending: 0", "parked: 1"]
    assert lines[4].split() == ["INDEX", "JOB", "ID", "REASON"]
    assert lines[5].split() == ["1", ids[1], "handler_error"]
    data = json.loads(broker("groups", gid, "--json").stdout)
    assert data == {
        "id": gid,
        "state": "failed",
        "size": 3,
        "succeeded": 2,
        "pending": 0,
        "parked": [{"index": 1, "job_id": ids[1], "reason": "handler_error"}],
    }


@pytest.mark.timeout(90)
def test_a_finished_and_an_open_group(broker: Broker, groups: Groups) -> None:
    finished, _ = groups.make()
    out = broker.ok("groups", finished)
    assert out.splitlines() == [
        f"group {finished}: finished",
        "succeeded: 3/3",
        "pending: 0",
        "parked: 0",
    ]
    assert json.loads(broker.ok("groups", finished, "--json"))["state"] == "finished"
    still_open, _ = groups.make(consume=False)
    out = broker.ok("groups", still_open)
    assert out.splitlines()[:2] == [f"group {still_open}: open", "succeeded: 0/3"]
    assert "pending: 3" in out
    # A look leaves the open group as it was.
    assert json.loads(broker.ok("groups", still_open, "--json"))["state"] == "open"


@pytest.mark.timeout(60)
def test_an_unknown_group_is_one_line_and_exit_1(broker: Broker, groups: Groups) -> None:
    groups.ids.append("no-such-group")
    result = broker("groups", "no-such-group")
    assert result.returncode == ExitCode.FAILURE
    # The test broker's address: 5672, or the RabbitMQ 4.x node's port on that pass.
    assert "no group no-such-group on amqp://127.0.0.1:" in one_line_error(result)
    as_json = broker("groups", "no-such-group", "--json")
    assert as_json.returncode == ExitCode.FAILURE
    assert json.loads(as_json.stdout)["state"] == "unknown"


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_exit_4() -> None:
    result = cli("groups", "g1", "--url", UNREACHABLE_URL, "--timeout", "1", env=base_env())
    assert result.returncode == ExitCode.CONNECTION
    one_line_error(result)


@pytest.mark.timeout(60)
def test_help_usage_and_config_errors() -> None:
    assert "groups" in cli("--help").stdout
    missing = cli("groups")
    assert missing.returncode == ExitCode.CONFIG
    assert "GROUP_ID" in one_line_error(missing)
    bad = cli("groups", "g1", "--url", "http://user:s3cret@x/")
    assert bad.returncode == ExitCode.CONFIG
    assert "url" in one_line_error(bad)
