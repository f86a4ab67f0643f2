"""The worker ``bench/processes.py`` runs under ``amqp-worker run``: one CPU-bound handler.

Not meant to be run by hand. ``spin`` busies this process for ``ms`` milliseconds
of pure Python (it holds the GIL throughout, as real CPU-bound handlers do), then
appends the wall-clock time it finished to ``$AW_BENCH_OUT/<pid>``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from amqp_worker import AMQPWorker

OUT = Path(os.environ.get("AW_BENCH_OUT", "."))

worker = AMQPWorker()


@worker.handler("spin")
def spin(args: dict[str, Any]) -> None:
    end = time.perf_counter() + float(args["ms"]) / 1000
    count = 0
    while time.perf_counter() < end:
        count += 1
    with open(OUT / str(os.getpid()), "a") as done:
        done.write(f"{time.time()}\n")
