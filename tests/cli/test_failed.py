"""``amqp-worker failed list/show/retry/purge`` on jobs a worker parked (PermanentError)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import time

import pytest

from amqp_worker import AMQPWorker, Job
from amqp_worker.cli import ExitCode
from tests.cli.app import build
from tests.cli.conftest import COMMAND, ROOT, Broker, one_line_error
from tests.harness.brokertools import BROKER_URL, queue_state

pytestmark = pytest.mark.broker


async def _park(broker: Broker, count: int) -> list[str]:
    """Have a worker park ``count`` jobs whose handler raises PermanentError; their ids."""
    worker = build(AMQPWorker(BROKER_URL, name=broker.name, queues=[broker.queue]))
    failed = broker.topology.failed_queue(broker.queue)
    async with worker:
        ids = [
            await worker.perform(Job(queue=broker.queue, handler="boom", args={"why": str(n)}))
            for n in range(1, count + 1)
        ]
        deadline = time.monotonic() + 20
        while (await queue_state(failed) or (0, 0))[0] < count:
            assert time.monotonic() < deadline, "the jobs were not parked"
            await asyncio.sleep(0.05)
    return ids


class Parked:
    """Three parked jobs, and helpers to look at the queues."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.ids = asyncio.run(_park(broker, 3))
        self.q = ("-q", broker.queue)

    def failed_count(self) -> int:
        state = asyncio.run(queue_state(self.broker.topology.failed_queue(self.broker.queue)))
        return state[0] if state else 0

    def work_count(self) -> int:
        state = asyncio.run(queue_state(self.broker.topology.work_queue(self.broker.queue)))
        return state[0] if state else 0

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.broker(*args, *self.q)


@pytest.fixture
def parked(broker: Broker) -> Parked:
    return Parked(broker)


@pytest.mark.timeout(60)
def test_list_shows_a_table_and_removes_nothing(parked: Parked) -> None:
    result = parked("failed", "list")
    assert result.returncode == ExitCode.OK, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID", "HANDLER", "QUEUE", "ATTEMPTS", "REASON", "LAST", "ERROR", "FAILED", "AT"
    ]  # fmt: skip
    assert [row.split()[0] for row in rows] == parked.ids  # oldest first
    for n, row in enumerate(rows, 1):
        assert row.split()[1:5] == ["boom", parked.broker.queue, "1", "handler_error"]
        assert f"PermanentError: boom: {n}" in row
    limited = parked("failed", "list", "--limit", "2")
    assert len(limited.stdout.splitlines()) == 3
    by_reason = parked("failed", "list", "--reason", "handler_error", "--limit", "1")
    assert len(by_reason.stdout.splitlines()) == 2
    none = parked("failed", "list", "--reason", "cancelled")
    assert none.stdout.strip() == "no failed jobs"
    bad = parked("failed", "list", "--reason", "bored")
    assert bad.returncode == ExitCode.CONFIG
    as_json = json.loads(parked("failed", "list", "--json").stdout)
    assert [r["id"] for r in as_json] == parked.ids
    assert as_json[0]["handler"] == "boom"
    assert as_json[0]["job"]["args"] == {"why": "1"}
    assert parked.failed_count() == 3


@pytest.mark.timeout(60)
def test_list_of_a_queue_that_never_failed_creates_nothing(broker: Broker) -> None:
    assert broker.ok("failed", "list", "-q", broker.queue) == "no failed jobs\n"
    assert broker.ok("failed", "list", "-q", broker.queue, "--json") == "[]\n"
    assert broker.ok("failed", "purge", "--all", "--yes", "-q", broker.queue).startswith(
        "deleted 0 failed job(s)"
    )
    failed = broker.topology.failed_queue(broker.queue)
    assert asyncio.run(queue_state(failed)) is None  # read passively: nothing declared


@pytest.mark.timeout(60)
def test_show_prints_the_whole_record(parked: Parked) -> None:
    job_id = parked.ids[1]
    out = parked("failed", "show", job_id).stdout
    assert f"id:        {job_id}" in out
    assert "handler:   boom" in out
    assert "reason:    handler_error" in out
    assert "attempts:  1" in out
    assert '"why": "2"' in out  # the job JSON with its args
    assert "attempt 0 at " in out
    assert "amqp_worker.errors.PermanentError: boom: 2" in out
    assert "last traceback:" in out
    assert "Traceback (most recent call last)" in out
    record = json.loads(parked("failed", "show", job_id, "--json").stdout)
    assert record["id"] == job_id
    assert record["job"]["args"] == {"why": "2"}
    assert record["reason"] == "handler_error"
    assert [a["attempt"] for a in record["history"]] == [0]
    assert record["error_type"] == "amqp_worker.errors.PermanentError"
    assert "PermanentError: boom: 2" in record["traceback"]


@pytest.mark.timeout(60)
def test_show_of_an_unknown_id_is_not_found(parked: Parked) -> None:
    result = parked("failed", "show", "no-such-id")
    assert result.returncode == ExitCode.FAILURE
    assert "no failed job with id no-such-id" in one_line_error(result)


@pytest.mark.timeout(90)
def test_retry_moves_jobs_back_and_twice_is_safe(parked: Parked) -> None:
    first, second, third = parked.ids
    result = parked("failed", "retry", first)
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == f"retried {first}\n"
    assert (parked.failed_count(), parked.work_count()) == (2, 1)

    again = parked("failed", "retry", first)
    assert again.returncode == ExitCode.FAILURE
    assert f"no failed job with id {first}" in one_line_error(again)
    assert (parked.failed_count(), parked.work_count()) == (2, 1)

    mixed = parked("failed", "retry", second, "no-such-id")
    assert mixed.returncode == ExitCode.FAILURE
    assert mixed.stdout == f"retried {second}\n"
    assert "no failed job with id no-such-id" in one_line_error(mixed)

    everything = parked("failed", "retry", "--all")
    assert everything.returncode == ExitCode.OK
    assert everything.stdout == f"retried {third}\n"
    assert (parked.failed_count(), parked.work_count()) == (0, 3)
    assert parked("failed", "retry", "--all").stdout == "no failed jobs to retry\n"


@pytest.mark.timeout(90)
def test_purge_asks_first_and_deletes(parked: Parked) -> None:
    first, *_ = parked.ids
    refused = parked("failed", "purge", "--all")  # stdin is not a terminal, no --yes
    assert refused.returncode == ExitCode.FAILURE
    assert "refusing to purge without --yes" in one_line_error(refused)
    assert parked.failed_count() == 3

    one = parked("failed", "purge", first, "--yes")
    assert one.returncode == ExitCode.OK
    assert one.stdout == f"deleted {first}\ndeleted 1 failed job(s) of {parked.broker.queue}\n"
    assert parked.failed_count() == 2

    unknown = parked("failed", "purge", first, "--yes")
    assert unknown.returncode == ExitCode.FAILURE
    assert f"no failed job with id {first}" in unknown.stderr

    rest = parked("failed", "purge", "--all", "--yes")
    assert rest.returncode == ExitCode.OK
    assert rest.stdout == f"deleted 2 failed job(s) of {parked.broker.queue}\n"
    assert (parked.failed_count(), parked.work_count()) == (0, 0)


def _on_a_terminal(parked: Parked, answer: str, *args: str) -> tuple[int, str]:
    """Run ``amqp-worker args`` with a pseudo-terminal on stdin and stdout; answer its prompt."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*COMMAND, *args, *parked.q],
            env=parked.broker.env,
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
    finally:
        os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if not answered and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(10), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(90)
def test_purge_on_a_terminal_asks_for_confirmation(parked: Parked) -> None:
    code, out = _on_a_terminal(parked, "n", "failed", "purge", "--all")
    assert "Delete every failed job of " in out
    assert code == ExitCode.FAILURE, out
    assert "nothing deleted" in out
    assert parked.failed_count() == 3

    code, out = _on_a_terminal(parked, "y", "failed", "purge", parked.ids[0], parked.ids[1])
    assert "Delete 2 failed job(s)?" in out
    assert code == ExitCode.OK, out
    assert parked.failed_count() == 1
