"""The examples in examples/ run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.timeout(60)
def test_quickstart_runs_with_the_in_process_worker() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMQP_WORKER_URL"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    ).stdout
    assert "in-process SimpleWorker" in out
    assert "all 4 jobs ran" in out
