"""Worker processes for the multi-process tests: start a ``tests.*`` module, stop it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.harness.brokertools import BROKER_URL

ROOT = Path(__file__).resolve().parents[2]


async def spawn_worker(module: str, log: Path, *args: str) -> asyncio.subprocess.Process:
    """``python -m module BROKER_URL *args`` from the repository root; its output to ``log``.

    Warnings are errors in it, as in the tests.
    """
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            BROKER_URL,
            *args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"},
            stdout=out,
            stderr=out,
        )


async def stop_worker(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` and wait for the exit (60 s, then SIGKILL)."""
    if proc.returncode is None:
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
