"""Run ``amqp-worker`` as a subprocess, on names no other test uses, and clean up after it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amqp_worker._rabbitmq.topology import Topology
from tests.harness.brokertools import BROKER_URL, delete_topology

ROOT = Path(__file__).parent.parent.parent
#: The installed console script runs the same code as ``python -m amqp_worker.cli``.
COMMAND = [sys.executable, "-m", "amqp_worker.cli"]
UNREACHABLE_URL = "amqp://guest:s3cret-pw@127.0.0.1:1/"
#: How long a test waits for a daemon to start: the start's own bound (SYNC_TIMEOUT_S), and more.
START_WAIT_S = 75.0


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: no AMQP_WORKER_* from outside, warnings are errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMQP_WORKER_")}
    env.update(PYTHONWARNINGS="error", PYTHONUNBUFFERED="1", **extra)
    return env


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run ``amqp-worker args...`` to completion."""
    return subprocess.run(
        [*COMMAND, *args],
        env=env if env is not None else base_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command, checked to hold no traceback or secret."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr + result.stdout
    return lines[0]


class Broker:
    """A unique worker name and queue on the shared RabbitMQ, and the env to use them."""

    def __init__(self, tmp_path: Path) -> None:
        token = uuid.uuid4().hex[:10]
        self.name = f"awtest-cli-{token}"
        self.queue = f"q{token}"
        self.queues = [self.queue]
        self.topology = Topology(name=self.name)
        self.out = tmp_path
        self.env = base_env(
            AMQP_WORKER_URL=BROKER_URL,
            AMQP_WORKER_NAME=self.name,
            AMQP_WORKER_PUBLISH_TIMEOUT_S="10",
            AW_CLI_TEST_DIR=str(tmp_path),
        )
        self.daemons: list[subprocess.Popen[str]] = []

    def new_queue(self) -> str:
        queue = f"q{uuid.uuid4().hex[:10]}"
        self.queues.append(queue)
        return queue

    def __call__(
        self, *args: str, timeout: float = 30, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return cli(*args, env={**self.env, **env}, timeout=timeout)

    def ok(self, *args: str, timeout: float = 30) -> str:
        """Run a command that must succeed; its stdout."""
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result.stdout

    def enqueue(self, handler: str, args: dict[str, Any] | None = None, *extra: str) -> str:
        out = self.ok(
            "enqueue", "-q", self.queue, "-H", handler, "--args", json.dumps(args or {}), *extra
        )
        return out.strip()

    def daemon(self, *args: str, target: str = "tests.cli.app:worker") -> subprocess.Popen[str]:
        """Start ``amqp-worker run target`` on this queue; it logs to a file in the out dir."""
        log = open(self.out / f"daemon-{len(self.daemons)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [*COMMAND, "run", target, "-q", self.queue, *args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        self.daemons.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[str]) -> str:
        return (self.out / f"daemon-{self.daemons.index(proc)}.log").read_text()

    def wait_for_log(self, proc: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log(proc)
            if text in log:
                return log
            assert proc.poll() is None, f"the daemon exited {proc.returncode}:\n{log}"
            assert time.monotonic() < deadline, f"no {text!r} in the daemon's log:\n{log}"
            time.sleep(0.05)

    def wait_started(self, proc: subprocess.Popen[str]) -> str:
        """Wait for the daemon's "worker started", as long as a start may take.

        A start waits up to ``SYNC_TIMEOUT_S`` (60 s) to read the cancellations
        stream up to now before it takes jobs; on a loaded machine RabbitMQ 4.x
        once took over 30 s to answer (CI, stop 27).
        """
        return self.wait_for_log(proc, "worker started", timeout=START_WAIT_S)

    def wait_for_file(self, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (self.out / name).exists():
            for proc in self.daemons:
                assert proc.poll() is None, f"a daemon exited {proc.returncode}:\n{self.log(proc)}"
            assert time.monotonic() < deadline, f"{name} never appeared"
            time.sleep(0.05)

    def stop(self, proc: subprocess.Popen[str], timeout: float = 30) -> int:
        """SIGTERM ``proc`` and wait for it; its exit code."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        asyncio.run(delete_topology(self.topology, self.queues))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    made = Broker(tmp_path)
    try:
        yield made
    finally:
        made.close()
