"""A 1,000-job smoke run of bench/throughput.py: the benchmark still runs, and is exact.

It checks no figure (nothing in the test command is timed). It checks that
every row ran, that each worker consume ran every job exactly once and left
its queues empty (the bench raises otherwise), and that the JSON report is
whole. A refactor that breaks the bench fails here, not in the next
measurement.
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

BENCH = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"


def test_a_small_bench_run_completes_with_every_job_run_exactly_once() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "1000", "--rounds", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=170,
        # The broker under test (the 4.x pass has its own), not the bench's default.
        env={**os.environ, "PYTHONWARNINGS": "error", "AMQP_WORKER_BENCH_URL": BROKER_URL},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    (table,) = report["tables"]
    assert table["queue_type"] == "classic"
    cases = {row["case"] for row in table["results"]}
    assert {
        "raw publish (pipelined)",
        "worker perform (sequential)",
        "worker perform (256 concurrent)",
        "worker consume (async handler)",
        "worker consume (typed args)",
        "worker consume (sync handler)",
        "worker mixed",
    } <= cases
    for row in table["results"]:
        assert row["jobs_per_s"] > 0, row
