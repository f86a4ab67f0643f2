"""How fast the dashboard's failed-jobs pages are on a failed queue of N parked jobs.

Usage::

    python3 bench/dashboard.py                  # 10,000 parked jobs, median of 5 rounds
    python3 bench/dashboard.py --jobs 1000 --rounds 1 --json

One run parks N jobs (5 handlers, varied errors, exactly 37 with the rare word
"zanzibar") in ``awbench-<hex>.failed.emails``, serves :class:`Dashboard` with
uvicorn in this process, and times real HTTP requests (httpx, to the last byte of
the body): the overview, the first page, a text search, a handler search and a
job's detail page. A search reads every parked job, so the dashboard keeps a full
read for ``SNAPSHOT_TTL_S``; each cold row runs on a fresh dashboard (three per
round) that has not read the whole queue yet, so nothing is reused. The baseline is plain aio-pika reading all N messages unacked
(prefetch 0, then closing the channel): the floor for any full read.

Each round reads the queue's ids with that raw reader at its start and its end
and exits non-zero unless both equal the seeded order (nothing taken, nothing
reordered). Every page is checked to show the expected jobs. Every queue and
exchange is deleted at the end, also after a failure or Ctrl-C. No time is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import uvicorn
from _failed_seed import HANDLERS, QUEUE, RARE_WORD, Seed, read_ids, seed_failed
from _shared import delete_all, describe, environment
from aio_pika.abc import AbstractConnection

from amqp_worker.dashboard import Dashboard, DashboardSettings

DEFAULT_URL = os.environ.get("AMQP_WORKER_BENCH_URL", "amqp://guest:guest@127.0.0.1:5672/")
PAGE = 50
HTTP_TIMEOUT_S = 300.0

RAW = "raw read of all N (aio-pika)"
#: Table rows in order: (case, whether it is a full read shown against RAW).
ROWS: list[tuple[str, bool]] = [
    ("overview, fresh dashboard", False),
    ("overview", False),
    ("first page, fresh dashboard", False),
    ("first page", False),
    (f"search text={RARE_WORD}, cold", True),
    (f"search handler={HANDLERS[0]}, cold", True),
    ("job detail, cold", True),
    ("job detail, right after a search", False),
    (RAW, False),
]


class Disturbed(Exception):
    """The failed queue no longer holds the seeded jobs in the seeded order."""


@asynccontextmanager
async def served(seed: Seed) -> AsyncIterator[httpx.AsyncClient]:
    """A fresh Dashboard behind uvicorn on a free loopback port, and a client of it.

    uvicorn binds the port itself (port 0): a socket handed to it made without
    IPPROTO_TCP gets no TCP_NODELAY from asyncio, which adds ~44 ms to every response.
    """
    app = Dashboard(seed.settings, DashboardSettings())
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=HTTP_TIMEOUT_S) as client:
            yield client
    finally:
        server.should_exit = True
        await serving  # runs the lifespan shutdown: Dashboard.aclose()


async def get(client: httpx.AsyncClient, path: str, **params: str) -> tuple[float, str]:
    """Seconds until the whole body of ``GET path`` arrived, and the body."""
    started = time.perf_counter()
    response = await client.get(path, params=params)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {response.url}: HTTP {response.status_code}")
    return elapsed, response.text


def check_rows(html: str, expected: list[str], what: str) -> None:
    shown = re.findall(r'data-id="([^"]+)"', html)
    if shown != expected:
        raise RuntimeError(f"{what}: showed {len(shown)} jobs, not the {len(expected)} expected")


def check_queue(seed: Seed, ids: list[str], when: str) -> None:
    if ids != seed.ids:
        same = len(ids) == len(seed.ids) and sorted(ids) == sorted(seed.ids)
        how = "reordered" if same else f"{len(ids)} messages, not {len(seed.ids)}"
        raise Disturbed(f"{seed.failed_queue} at the {when} of a round: {how}")


async def run_round(seed: Seed, connection: AbstractConnection) -> dict[str, float]:
    names = [case for case, _ in ROWS]
    t: dict[str, float] = {}
    ids, t[RAW] = await read_ids(connection, seed.failed_queue)
    check_queue(seed, ids, "start")
    detail = {"id": seed.ids[len(seed.ids) // 2], "queue": QUEUE}
    handler = [i for i, h in zip(seed.ids, seed.handlers, strict=True) if h == HANDLERS[0]]
    async with served(seed) as client:
        t[names[2]], html = await get(client, "/failed")
        check_rows(html, seed.ids[:PAGE], "first page")
        t[names[4]], html = await get(client, "/failed", text=RARE_WORD)
        check_rows(html, seed.rare_ids[:PAGE], "text search")
        t[names[7]], html = await get(client, "/failed/job", **detail)
        t[names[3]], html = await get(client, "/failed")
        check_rows(html, seed.ids[:PAGE], "first page")
        await get(client, "/api/overview")  # the first one may run rabbitmqctl
        t[names[1]], body = await get(client, "/api/overview")
    async with served(seed) as client:
        t[names[0]], body = await get(client, "/api/overview")
        if json.loads(body)["totals"]["failed"] != len(seed.ids):
            raise RuntimeError(f"overview: {json.loads(body)['totals']}")
        await get(client, "/failed")  # connects the reader, compiles the templates
        t[names[5]], html = await get(client, "/failed", handler=HANDLERS[0])
        check_rows(html, handler[:PAGE], "handler search")
    async with served(seed) as client:
        await get(client, "/api/overview")
        await get(client, "/failed")
        t[names[6]], html = await get(client, "/failed/job", **detail)
        if detail["id"] not in html:
            raise RuntimeError("job detail: the job is not on its page")
    ids, t[RAW + " (end)"] = await read_ids(connection, seed.failed_queue)
    check_queue(seed, ids, "end")
    return t


def summarize(rounds: list[dict[str, float]]) -> list[dict[str, Any]]:
    raw = statistics.median(r[RAW] for r in rounds)
    rows = []
    for case, full_read in ROWS:
        row: dict[str, Any] = {
            "case": case,
            "median_s": round(statistics.median(r[case] for r in rounds), 4),
            "rounds_s": [round(r[case], 4) for r in rounds],
        }
        if full_read:
            row["vs_raw"] = round(row["median_s"] / raw, 2)
            row["rounds_vs_raw"] = [round(r[case] / r[RAW], 2) for r in rounds]
        rows.append(row)
    return rows


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['jobs']:,} parked jobs ({report['seed_publish_s']:.1f} s to publish), median "
        f"of {report['rounds']} round(s); {describe(report['environment'])}"
    )
    header = f"{'case':<40} {'median':>8} {'vs raw':>6}  rounds (s)"
    print(header)
    print("-" * len(header))
    for row in report["results"]:
        ratio = f"{row['vs_raw']:.2f}" if "vs_raw" in row else ""
        rounds = ", ".join(f"{value:.3f}" for value in row["rounds_s"])
        print(f"{row['case']:<40} {row['median_s']:>7.3f}s {ratio:>6}  {rounds}")
    print(
        "\nvs raw: median over the raw read's median (each round's own ratio in --json). "
        "Order and count\nof the failed queue checked at the start and end of every round: "
        f"{report['queue_check']}."
    )


async def main_async(args: argparse.Namespace) -> int:
    seed = Seed(args.url)
    rounds: list[dict[str, float]] = []
    connection = await aio_pika.connect(args.url)
    try:
        if not args.json:
            print(f"parking {args.jobs:,} jobs in {seed.failed_queue}...", file=sys.stderr)
        publish_s = await seed_failed(seed, connection, args.jobs)
        for index in range(args.rounds):
            if not args.json:
                print(f"round {index + 1}/{args.rounds}...", file=sys.stderr, flush=True)
            rounds.append(await run_round(seed, connection))
    except Disturbed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            await connection.close()
        finally:
            await delete_all(args.url, *seed.names())
    report = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "seed_publish_s": round(publish_s, 3),
        "environment": await environment(args.url),
        "results": summarize(rounds),
        "queue_check": "same ids, same order",
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000, help="parked jobs (10,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown (5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--url", default=DEFAULT_URL, help="broker URL (AMQP_WORKER_BENCH_URL)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1")
    return args


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main_async(parse_args())))
    except KeyboardInterrupt:
        print("interrupted; the run's queues and exchanges were deleted", file=sys.stderr)
        sys.exit(130)
