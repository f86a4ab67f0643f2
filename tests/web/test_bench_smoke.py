"""A 300-job smoke run of bench/dashboard.py: the benchmark still runs and finds the
queue unchanged. No figure is checked (nothing in the test command is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.brokertools import BROKER_URL

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dashboard.py"


def test_a_small_dashboard_bench_run_completes_and_leaves_the_queue_as_it_was() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "300", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
        # The broker under test (the 4.x pass has its own), not the bench's default.
        env={**os.environ, "PYTHONWARNINGS": "error", "AMQP_WORKER_BENCH_URL": BROKER_URL},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["jobs"] == 300
    cases = {row["case"] for row in report["results"]}
    assert {"first page", "search text=zanzibar, cold", "raw read of all N (aio-pika)"} <= cases
    assert report["queue_check"]
