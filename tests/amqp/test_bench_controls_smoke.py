"""A tiny run of bench/controls.py: the benchmark still runs, and is exact.

It checks no figure (nothing in the test command is timed): every case ran
each job exactly once (the bench raises otherwise) and the report is whole.
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

BENCH = Path(__file__).resolve().parents[2] / "bench" / "controls.py"


def test_a_small_controls_bench_run_completes_with_every_job_run_exactly_once() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "100", "--json"],
        capture_output=True,
        text=True,
        timeout=170,
        # The broker under test (the 4.x pass has its own), not the bench's default.
        env={**os.environ, "PYTHONWARNINGS": "error", "AMQP_WORKER_BENCH_URL": BROKER_URL},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["case"]: row for row in json.loads(done.stdout)["rows"]}
    assert {"raw aio-pika", "none"} <= set(rows)
    assert any(case.startswith("per-key order") for case in rows)
    for row in rows.values():
        assert row["jobs"] == 100
        assert row["consume_jobs_per_s"] > 0, row
