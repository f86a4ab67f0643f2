"""examples/unique_jobs.py runs as documented (in process; the AMQP path is the contract suite's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(60)
def test_unique_jobs_example_refuses_the_second_enqueue_in_process() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_WORKER_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "unique_jobs.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert "second rebuild refused" in out
    assert out.count("rebuilding report 7") >= 1
    assert "the key is free again" in out
