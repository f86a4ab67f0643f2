"""``amqp-worker cancel JOB_ID...``: cancels reach a running daemon and a daemon started later."""

from __future__ import annotations

import json
import time

import pytest

from amqp_worker.cli import ExitCode
from tests.cli.conftest import UNREACHABLE_URL, Broker, base_env, cli, one_line_error

pytestmark = pytest.mark.broker


def parked_reasons(broker: Broker, want: set[str], timeout: float = 60) -> dict[str, str]:
    """Poll ``failed list --json`` until every id in ``want`` is parked; id -> reason."""
    deadline = time.monotonic() + timeout
    while True:
        listed = json.loads(broker.ok("failed", "list", "-q", broker.queue, "--json"))
        reasons = {record["id"]: record["reason"] for record in listed}
        if want <= set(reasons):
            return reasons
        assert time.monotonic() < deadline, f"not parked: {want - set(reasons)}"
        time.sleep(0.2)


@pytest.mark.timeout(180)
def test_cancel_stops_a_running_job_and_one_queued_before_the_daemon_started(
    broker: Broker,
) -> None:
    queued = broker.enqueue("touch")
    delayed = broker.enqueue("touch", {}, "--in", "3s")
    out = broker.ok("cancel", queued, delayed)
    assert out.splitlines() == [f"cancelled {queued}", f"cancelled {delayed}"]
    daemon = broker.daemon()  # started after the cancel: it must not run either job
    broker.wait_started(daemon)
    running = broker.enqueue("touch", {"sleep": 3600})
    broker.wait_for_file(f"{running}.started")
    data = json.loads(broker.ok("cancel", running, "--json"))
    assert data["cancelled"] == [running]
    assert data["stream"] == f"{broker.name}.cancels"
    reasons = parked_reasons(broker, {queued, delayed, running})
    assert [reasons[i] for i in (queued, delayed, running)] == ["cancelled"] * 3
    kept = broker.enqueue("touch")
    broker.wait_for_file(f"{kept}.done")  # the daemon goes on running other jobs
    assert not (broker.out / f"{queued}.started").exists()
    assert not (broker.out / f"{delayed}.started").exists()
    assert not (broker.out / f"{running}.done").exists()
    assert broker.stop(daemon) == 0


@pytest.mark.timeout(60)
def test_an_unknown_id_is_no_error(broker: Broker) -> None:
    assert broker.ok("cancel", "no-such-job") == "cancelled no-such-job\n"


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_exit_4() -> None:
    result = cli("cancel", "j1", "--url", UNREACHABLE_URL, "--timeout", "1", env=base_env())
    assert result.returncode == ExitCode.CONNECTION
    assert "cannot connect" in one_line_error(result)


@pytest.mark.timeout(60)
def test_usage_and_config_errors() -> None:
    assert "cancel" in cli("--help").stdout
    missing = cli("cancel")
    assert missing.returncode == ExitCode.CONFIG
    assert "JOB_ID" in one_line_error(missing)
    bad_url = cli("cancel", "j1", "--url", "http://user:s3cret@x/")
    assert bad_url.returncode == ExitCode.CONFIG
    assert "url" in one_line_error(bad_url)
    too_long = cli("cancel", "x" * 300, "--url", UNREACHABLE_URL)
    assert too_long.returncode == ExitCode.CONFIG
    assert "job id" in one_line_error(too_long)
