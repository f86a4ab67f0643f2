"""``amqp-worker run``: the daemon starts, runs jobs, and stops on signals as documented."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from amqp_worker import __version__
from amqp_worker.cli import ExitCode
from tests.cli.conftest import COMMAND, ROOT, UNREACHABLE_URL, Broker, base_env
from tests.harness.brokertools import BROKER_ADDRESS, queue_state


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_run_processes_jobs_and_finishes_the_running_one_on_sigterm(broker: Broker) -> None:
    proc = broker.daemon("-c", "2", "--shutdown-timeout", "20")
    log = broker.wait_started(proc)
    banner = log.splitlines()[0]
    assert banner == (
        f"amqp-worker {__version__}: amqp://{BROKER_ADDRESS} vhost=/ name={broker.name} "
        f"queues={broker.queue} handlers=block,boom,flaky,touch concurrency=2 prefetch=4"
    )
    assert "guest" not in log

    quick = broker.enqueue("touch")
    broker.wait_for_file(f"{quick}.done")
    slow = broker.enqueue("touch", {"sleep": 2})
    broker.wait_for_file(f"{slow}.started")
    started = time.monotonic()
    assert broker.stop(proc) == ExitCode.OK
    assert time.monotonic() - started < 20
    assert (broker.out / f"{slow}.done").exists(), "the running job was not let finish"
    log = broker.log(proc)
    assert "SIGTERM received: stopping; running jobs get up to 20s" in log
    assert "worker stopped" in log
    assert "Traceback" not in log
    assert asyncio.run(queue_state(broker.topology.work_queue(broker.queue))) == (0, 0)


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_a_second_signal_stops_at_once_and_the_job_goes_back(broker: Broker) -> None:
    proc = broker.daemon("--shutdown-timeout", "60")
    broker.wait_started(proc)
    stuck = broker.enqueue("block", {"sleep": 120})  # a sync handler: its thread can't be cancelled
    broker.wait_for_file(f"{stuck}.started")
    proc.send_signal(signal.SIGTERM)
    broker.wait_for_log(proc, "SIGTERM received")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == ExitCode.FAILURE
    assert time.monotonic() - started < 15
    log = broker.log(proc)
    assert "SIGINT received again: stopping now" in log
    assert "worker stopped by force" in log
    assert not (broker.out / f"{stuck}.done").exists()
    # Never acked, so RabbitMQ has it back for the next worker.
    work = broker.topology.work_queue(broker.queue)
    deadline = time.monotonic() + 10
    while asyncio.run(queue_state(work)) != (1, 0):
        assert time.monotonic() < deadline, asyncio.run(queue_state(work))
        time.sleep(0.1)


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_json_logs_carry_the_job_fields(broker: Broker) -> None:
    proc = broker.daemon("--log-format", "json")
    broker.wait_started(proc)
    job_id = broker.enqueue("flaky")  # fails, is retried once, fails again and is parked
    broker.wait_for_log(proc, "parked in")
    assert broker.stop(proc) == ExitCode.OK
    records = [json.loads(line) for line in broker.log(proc).splitlines()]
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record)
    assert records[0]["message"].startswith(f"amqp-worker {__version__}: ")
    failures = [r for r in records if r.get("job_id") == job_id and "outcome" in r]
    assert [r["attempt"] for r in failures] == [0, 1]
    assert failures[0]["outcome"] != "parked"
    assert failures[1]["outcome"] == "parked"
    for record in failures:
        assert record["handler"] == "flaky"
        assert record["queue"] == broker.queue
        assert record["level"] == "ERROR"
        assert "ValueError: flaky failed" in record["traceback"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serving(broker: Broker, endpoint: str) -> tuple[subprocess.Popen[str], int]:
    """A started daemon serving ``endpoint`` (health or metrics) on a free loopback port."""
    port = _free_port()
    proc = broker.daemon(f"--{endpoint}-port", str(port), f"--{endpoint}-host", "127.0.0.1")
    broker.wait_started(proc)
    return proc, port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_health_check(broker: Broker) -> None:
    proc, port = _serving(broker, "health")
    assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert _get(f"http://127.0.0.1:{port}/other")[0] == 404
    assert broker.stop(proc) == ExitCode.OK


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition, 0 if absent."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_a_metrics_scrape_shows_the_counters_move(broker: Broker) -> None:
    proc, port = _serving(broker, "metrics")
    url = f"http://127.0.0.1:{port}/metrics"
    labels = {"queue": broker.queue, "handler": "touch"}
    before = _get(url)[1]
    assert _sample(before, "amqp_worker_jobs_succeeded_total", **labels) == 0

    done = [broker.enqueue("touch") for _ in range(3)]
    for job_id in done:
        broker.wait_for_file(f"{job_id}.done")
    broker.enqueue("boom")  # a PermanentError: failed once, parked
    broker.wait_for_log(proc, "parked in")
    # The last hook runs just after the files and the log line: poll the scrape.
    deadline = time.monotonic() + 10
    while True:
        status, text = _get(url)
        boom = {"queue": broker.queue, "handler": "boom"}
        if _sample(text, "amqp_worker_jobs_parked_total", **boom, reason="handler_error") == 1:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    assert status == 200
    assert _sample(text, "amqp_worker_jobs_started_total", **labels) == 3
    assert _sample(text, "amqp_worker_jobs_succeeded_total", **labels) == 3
    assert _sample(text, "amqp_worker_jobs_failed_total", **boom) == 1
    assert _sample(text, "amqp_worker_jobs_retried_total", **boom) == 0
    assert _sample(text, "amqp_worker_jobs_in_progress", **labels) == 0
    assert (
        _sample(text, "amqp_worker_job_duration_seconds_count", **labels, outcome="succeeded") == 3
    )
    assert "process_resident_memory_bytes" in text  # the default registry's collectors too
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_a_metrics_port_in_use_is_a_config_error(broker: Broker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = broker.daemon("--metrics-port", str(port), "--metrics-host", "127.0.0.1")
        assert proc.wait(30) == ExitCode.CONFIG
    assert f"cannot serve metrics on 127.0.0.1:{port}" in broker.log(proc)


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_options_override_a_factory_made_worker_and_keep_its_handlers(broker: Broker) -> None:
    proc = broker.daemon("-c", "3", "--prefetch", "7", target="tests.cli.app:make_worker")
    log = broker.wait_started(proc)
    assert f"queues={broker.queue} handlers=block,boom,flaky,touch concurrency=3 prefetch=7" in log
    job_id = broker.enqueue("touch")
    broker.wait_for_file(f"{job_id}.done")
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_the_example_daemon(broker: Broker) -> None:
    proc = broker.daemon(target="examples.daemon:worker")
    broker.wait_started(proc)
    broker.enqueue("send_email", {"user_id": 7})
    broker.enqueue("send_digest", {"user_id": 8, "items": 3})
    broker.wait_for_log(proc, "sent email to user 7")
    broker.wait_for_log(proc, "sent a digest of 3 items to user 8")
    assert broker.stop(proc) == ExitCode.OK


@pytest.mark.timeout(60)
def test_a_simple_worker_runs_until_sigterm() -> None:
    with subprocess.Popen(
        [*COMMAND, "run", "tests.cli.app:simple", "-c", "1"],
        env=base_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert "in-process SimpleWorker (persists nothing)" in banner
        assert "concurrency=1" in banner
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == ExitCode.OK
        assert "worker stopped" in proc.stderr.read()


@pytest.mark.timeout(60)
def test_sigterm_while_waiting_for_the_broker_stops_cleanly() -> None:
    env = base_env(AMQP_WORKER_URL=UNREACHABLE_URL, AMQP_WORKER_PUBLISH_TIMEOUT_S="30")
    with subprocess.Popen(
        [*COMMAND, "run", "tests.cli.app:worker"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("amqp-worker ")
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == ExitCode.OK
        assert time.monotonic() - started < 10
        rest = proc.stderr.read()
    assert "stopped before the worker started" in rest
    assert "s3cret" not in rest


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_daemon_options_come_from_the_environment_and_the_command_line_wins(
    broker: Broker,
) -> None:
    broker.env["AMQP_WORKER_LOG_FORMAT"] = "json"
    broker.env["AMQP_WORKER_LOG_LEVEL"] = "WARNING"
    from_env = broker.daemon()
    overridden = broker.daemon("--log-format", "text", "--log-level", "INFO")
    log = broker.wait_started(overridden)
    assert log.startswith("amqp-worker ")  # text, and INFO lines shown
    assert broker.stop(overridden) == ExitCode.OK
    assert broker.stop(from_env) == ExitCode.OK
    banner, *rest = broker.log(from_env).splitlines()
    assert json.loads(banner)["message"].startswith("amqp-worker ")
    assert not any('"level": "INFO"' in line for line in rest)  # WARNING and above only
