"""A tiny run of bench/workflows.py: the benchmark still runs, and is exact.

It checks no figure (nothing in the test command is timed). It checks that
every case ran (each checks that every job ran, exactly once outside the
group, and a group's callback once; the bench raises otherwise), that the
JSON report is whole,
and that the results made one stream and nothing else on the broker.
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

BENCH = Path(__file__).resolve().parents[2] / "bench" / "workflows.py"
SMALL = "--group-jobs 200 --latency-jobs 10 --result-jobs 200 --objects 100 --rounds 1"


def test_a_small_workflows_bench_run_completes_with_every_job_run_exactly_once() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), *SMALL.split(), "--json"],
        capture_output=True,
        text=True,
        timeout=170,
        # The broker under test (the 4.x pass has its own), not the bench's default.
        env={**os.environ, "PYTHONWARNINGS": "error", "AMQP_WORKER_BENCH_URL": BROKER_URL},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["group"]["jobs"] == 200
    assert report["group"]["ratio"] > 0
    # Reported, not asserted: a member handed back after the group finished runs again.
    assert len(report["group"]["members_run_twice"]) == 1
    assert report["result_cost"]["ratio"] > 0
    assert set(report["latency_ms"]) == {"perform", "perform + handler ran", "result"}
    for row in report["latency_ms"].values():
        assert row["n"] == 10
    (objects,) = report["objects"]
    assert objects["results"] == 100
    # Its queue counts (rabbitmqctl) are reported, not asserted: rabbitmqctl asks the
    # machine's default node, which is not the broker under test on the RabbitMQ 4.x pass.
