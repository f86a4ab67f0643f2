"""``amqp-worker queues``: message counts of work, due, delay and failed queues."""

from __future__ import annotations

import asyncio
import signal
from datetime import datetime

import click

from amqp_worker._rabbitmq.inspection import QueueInspector, QueueStat, unacked_counts
from amqp_worker._rabbitmq.settings import AMQPSettings

from .common import ExitCode, Target, connection_options, queue_option, render_table

__all__ = ["queues", "queues_report"]

HEADERS = ("QUEUE", "READY", "UNACKED", "DUE", "FAILED", "CONSUMERS")
CLEAR_SCREEN = "\033[2J\033[H"


def _count(stat: QueueStat | None) -> str:
    return "-" if stat is None else str(stat.ready)


async def queues_report(inspector: QueueInspector, settings: AMQPSettings) -> str:
    """The table of ``settings.queues``, a footer with delayed jobs; '-' for missing queues."""
    topology = settings.topology
    unacked = await unacked_counts(settings)
    rows: list[tuple[str, ...]] = []
    for queue in settings.queues:
        name = topology.work_queue(queue)
        work = await inspector.stat(name)
        due = await inspector.stat(topology.due_queue(queue))
        failed = await inspector.stat(topology.failed_queue(queue))
        rows.append(
            (
                queue,
                _count(work),
                "-" if unacked is None or work is None else str(unacked.get(name, 0)),
                _count(due),
                _count(failed),
                "-" if work is None else str(work.consumers),
            )
        )
    delayed: int | None = None
    for name in topology.delay_queues():
        stat = await inspector.stat(name)
        if stat is not None:
            delayed = (delayed or 0) + stat.ready
    footer = (
        f"delayed: {'-' if delayed is None else delayed} "
        f"(in the delay queues of {settings.name!r}, shared by all its queues)"
    )
    return "\n".join(
        [f"{settings.broker} name={settings.name}", render_table(HEADERS, rows), footer]
    )


@click.command()
@queue_option("Show this job queue.")
@click.option("-w", "--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Refresh interval of --watch.",
)
@connection_options
def queues(queues: tuple[str, ...], watch: bool, interval: float, target: Target) -> ExitCode:
    """Message counts per job queue.

    READY and CONSUMERS are the work queue's; UNACKED comes from rabbitmqctl
    when the broker runs on this machine ('-' otherwise); DUE counts delayed
    jobs about to run; FAILED counts parked jobs. The footer counts jobs
    still waiting in the delay queues. A queue that does not exist shows '-'.
    """
    settings = target.settings(queues)

    async def show(inspector: QueueInspector) -> None:
        while True:
            report = await queues_report(inspector, settings)
            if not watch:
                click.echo(report)
                return
            stamp = datetime.now().astimezone().strftime("%H:%M:%S")
            click.echo(f"{CLEAR_SCREEN}{report}\n(every {interval:g}s, {stamp}; Ctrl-C quits)")
            await asyncio.sleep(interval)

    async def until_ctrl_c() -> None:
        # Ctrl-C ends the watch between two awaits of our own, not wherever asyncio's
        # default handler would cancel it (mid-close, mid-rabbitmqctl: a traceback and a
        # slow exit); the connection then closes as usual.
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        if watch:
            loop.add_signal_handler(signal.SIGINT, interrupted.set)
        async with QueueInspector(settings) as inspector:
            showing = asyncio.ensure_future(show(inspector))
            waiting = asyncio.ensure_future(interrupted.wait())
            await asyncio.wait({showing, waiting}, return_when=asyncio.FIRST_COMPLETED)
            for task in (showing, waiting):
                task.cancel()
            await asyncio.gather(showing, waiting, return_exceptions=True)
            error = None if showing.cancelled() else showing.exception()
            if error is not None:
                raise error  # a lost connection, say: the CLI reports it as always

    asyncio.run(until_ctrl_c())
    return ExitCode.OK
