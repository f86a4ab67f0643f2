"""A small run of bench/processes.py: the benchmark still runs, and every job runs exactly once.

No figure is checked (nothing in the test command is timed); the bench itself
fails a round in which a job did not run, or ran twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.brokertools import BROKER_URL

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "processes.py"


def test_a_small_processes_bench_completes_for_one_and_two_processes() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "200", "--spin-ms", "1", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=170,
        # The broker under test (the 4.x pass has its own), not the bench's default.
        env={**os.environ, "PYTHONWARNINGS": "error", "AMQP_WORKER_BENCH_URL": BROKER_URL},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [row["processes"] for row in report["table"]] == [1, 2]
    for row in report["table"]:
        assert row["jobs_per_s"] > 0, row
