"""``amqp-worker run --processes N``: real child processes, a real broker, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqp_worker import AMQPWorker, Job
from amqp_worker.cli import ExitCode
from tests.cli.conftest import UNREACHABLE_URL, Broker, one_line_error
from tests.harness.brokertools import BROKER_URL, queue_state

APP = "tests.cli.processes_app:worker"
STARTED = re.compile(r"child (\d+) \(pid (\d+)\) started")
#: The supervisor's line for a child that ended unplanned (not a --max-jobs/--max-memory replacement).
CHILD_DIED = re.compile(r"child \d+ \(pid \d+\) died \(")


def start(broker: Broker, *args: str) -> subprocess.Popen[str]:
    return broker.daemon(*args, target=APP)


def children(log: str) -> list[tuple[int, int]]:
    """(slot, pid) of every child the supervisor reported started, in order."""
    return [(int(slot), int(pid)) for slot, pid in STARTED.findall(log)]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def publish(broker: Broker, jobs: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Enqueue ``(handler, args)`` jobs on the broker's queue; their ids."""
    made = [Job(queue=broker.queue, handler=handler, args=args) for handler, args in jobs]

    async def send() -> None:
        publisher = AMQPWorker(BROKER_URL, name=broker.name, queues=[broker.queue])
        try:
            await publisher.perform_many(made)
        finally:
            await publisher.stop()

    asyncio.run(send())
    return [job.id for job in made]


def runs(broker: Broker) -> dict[str, list[int]]:
    """Job id -> the pids that finished it (the ``<id>.<pid>`` markers)."""
    found: dict[str, list[int]] = {}
    for path in broker.out.iterdir():
        job_id, _, pid = path.name.rpartition(".")
        if pid.isdigit():
            found.setdefault(job_id, []).append(int(pid))
    return found


def endpoint(log: str, path: str) -> str:
    match = re.search(rf"http://[\d.]+:(\d+){path}", log)
    assert match, log
    return f"http://127.0.0.1:{match.group(1)}{path}"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(url: str, name: str) -> float:
    """The sum of every sample of metric ``name`` (a counter's ``_total``) at ``url``."""
    _, text = get(url)
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_two_children_share_the_work_behind_one_health_and_one_metrics_endpoint(
    broker: Broker,
) -> None:
    proc = start(
        broker,
        *("--processes", "2", "-c", "1"),
        *("--health-port", "0", "--health-host", "127.0.0.1"),
        *("--metrics-port", "0", "--metrics-host", "127.0.0.1"),
    )
    log = broker.wait_for_log(proc, "child 1 (pid")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "both children")
    log = broker.log(proc)
    assert log.splitlines()[0].endswith(" concurrency=1 prefetch=2 processes=2")
    health, metrics = endpoint(log, "/healthz"), endpoint(log, "/metrics")
    wait_until(lambda: get(health)[0] == 200, "a healthy daemon")

    ids = publish(broker, [("work", {"sleep": 0.05})] * 40)
    wait_until(lambda: set(ids) <= set(runs(broker)), "every job")
    pids = {pid for _, pid in children(broker.log(proc))}
    ran_on = {pid for found in runs(broker).values() for pid in found}
    assert ran_on == pids, "both children ran jobs, and nothing else did"
    wait_until(
        lambda: samples(metrics, "amqp_worker_jobs_succeeded_total") == 40,
        "the summed metrics",
    )
    assert samples(metrics, "amqp_worker_jobs_in_progress") == 0

    assert broker.stop(proc) == ExitCode.OK
    log = broker.log(proc)
    assert "every child stopped" in log
    assert "Traceback" not in log
    assert "guest" not in log
    assert not any(alive(pid) for pid in pids)
    assert asyncio.run(queue_state(broker.topology.work_queue(broker.queue))) == (0, 0)


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_kill_9_of_a_child_under_load_loses_no_job_and_the_child_is_replaced(
    broker: Broker,
) -> None:
    proc = start(broker, "--processes", "2", "-c", "4")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "both children")
    ids = publish(broker, [("work", {"sleep": 0.02})] * 400)
    wait_until(lambda: len(runs(broker)) >= 50, "the first jobs")
    slot, victim = children(broker.log(proc))[0]
    os.kill(victim, signal.SIGKILL)

    wait_until(lambda: set(ids) <= set(runs(broker)), "every job, after the kill", timeout=120)
    log = broker.wait_for_log(proc, f"child {slot} (pid {victim}) died (killed by SIGKILL)")
    wait_until(lambda: len(children(broker.log(proc))) == 3, "a new child in the slot")
    assert children(broker.log(proc))[2][0] == slot
    assert len(runs(broker)) == 400, "every job ran at least once, and no other"
    assert broker.stop(proc) == ExitCode.OK
    log = broker.log(proc)
    assert "Traceback" not in log
    assert asyncio.run(queue_state(broker.topology.work_queue(broker.queue))) == (0, 0)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_child_is_replaced_after_max_jobs_per_child(broker: Broker) -> None:
    proc = start(broker, "--max-jobs-per-child", "5", "-c", "1", "--prefetch", "1")
    wait_until(lambda: len(children(broker.log(proc))) == 1, "the child")
    ids = publish(broker, [("work", {})] * 20)
    wait_until(lambda: set(ids) <= set(runs(broker)), "every job", timeout=90)
    log = broker.log(proc)
    assert "is being replaced: 5 jobs done (--max-jobs-per-child 5)" in log
    per_pid: dict[int, int] = {}
    for found in runs(broker).values():
        for pid in found:
            per_pid[pid] = per_pid.get(pid, 0) + 1
    assert len(per_pid) >= 3, per_pid
    assert max(per_pid.values()) <= 5 + 1, "a child takes no new job past its limit"
    assert not CHILD_DIED.search(log), "no child died: each was replaced as planned"
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_a_child_over_max_memory_is_replaced(broker: Broker) -> None:
    proc = start(broker, "--max-memory-per-child", "150MiB")
    wait_until(lambda: len(children(broker.log(proc))) == 1, "the child")
    [first] = [pid for _, pid in children(broker.log(proc))]
    [hog] = publish(broker, [("hog", {"mib": 200})])
    broker.wait_for_log(proc, "is being replaced: resident memory")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "the new child")
    wait_until(lambda: not alive(first), "the old child's exit")
    assert runs(broker)[hog] == [first], "the job that grew it finished, once"
    assert not CHILD_DIED.search(broker.log(proc)), "no child died"
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_a_job_that_kills_its_child_is_parked_as_crashed_once(broker: Broker) -> None:
    broker.env["AMQP_WORKER_MAX_DELIVERIES"] = "3"
    proc = start(broker, "--processes", "2")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "both children")
    [poison] = publish(broker, [("die", {})])
    ids = publish(broker, [("work", {"sleep": 0.01})] * 30)
    broker.wait_for_log(proc, f"job {poison} parked", timeout=120)
    wait_until(lambda: set(ids) <= set(runs(broker)), "the innocent jobs")
    failed = json.loads(broker.ok("failed", "list", "-q", broker.queue, "--json"))
    assert [(job["id"], job["reason"]) for job in failed] == [(poison, "crashed")], (
        "parked once, not once per copy"
    )
    log = broker.log(proc)
    assert "died (exit code 9)" in log
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_children_stop_on_their_own_when_the_supervisor_is_killed(broker: Broker) -> None:
    proc = start(broker, "--processes", "2")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "both children")
    pids = [pid for _, pid in children(broker.log(proc))]
    proc.kill()
    proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphans' exit", timeout=30)
    log = broker.log(proc)
    assert log.count("the supervisor is gone: stopping") == 2
    assert log.count("worker stopped") == 2


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_a_second_signal_stops_every_child_at_once(broker: Broker) -> None:
    proc = start(broker, "--processes", "2", "--shutdown-timeout", "60")
    wait_until(lambda: len(children(broker.log(proc))) == 2, "both children")
    [stuck] = publish(broker, [("work", {"sleep": 120})])
    broker.wait_for_file(f"{stuck}.started")
    proc.send_signal(signal.SIGTERM)
    broker.wait_for_log(proc, "SIGTERM received: stopping 2 child")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == ExitCode.FAILURE
    assert time.monotonic() - started < 20
    log = broker.log(proc)
    assert "SIGINT received again: stopping every child now" in log
    assert stuck not in runs(broker)


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_children_that_cannot_reach_the_broker_end_the_daemon_with_exit_4(
    broker: Broker,
) -> None:
    result = broker(
        "run",
        APP,
        "--processes",
        "2",
        "--url",
        UNREACHABLE_URL,
        AMQP_WORKER_PUBLISH_TIMEOUT_S="1",
        timeout=45,
    )
    assert result.returncode == ExitCode.CONNECTION, result.stderr
    assert "could not start (exit code 4): stopping" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_processes_need_an_amqp_worker(broker: Broker) -> None:
    result = broker("run", "tests.cli.app:simple", "--processes", "2")
    assert result.returncode == ExitCode.CONFIG
    assert "need an AMQPWorker" in one_line_error(result)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--processes", "0", "0 is not at least 1"),
        ("--processes", "many", "is not a whole number or 'auto'"),
        ("--max-memory-per-child", "12XB", "is not a size"),
        ("--max-memory-per-child", "10KiB", "is under 1 MiB"),
        ("--max-jobs-per-child", "0", "0 is not in the range"),
    ],
)
def test_bad_process_options_are_one_line_errors(
    broker: Broker, option: str, value: str, message: str
) -> None:
    result = broker("run", APP, option, value)
    assert result.returncode == ExitCode.CONFIG
    assert message in one_line_error(result)


def test_the_child_command_is_not_for_running_by_hand(broker: Broker) -> None:
    result = broker("_child")
    assert result.returncode == ExitCode.CONFIG
    assert "not by hand" in one_line_error(result)
