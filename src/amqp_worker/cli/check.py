"""``amqp-worker check``: is the broker reachable, and does each queue's topology exist?"""

from __future__ import annotations

import asyncio

import click

from amqp_worker._rabbitmq.inspection import QueueInspector

from .common import ExitCode, Target, connection_options, queue_option

__all__ = ["check"]


@click.command()
@queue_option("Check this job queue.")
@connection_options
def check(queues: tuple[str, ...], target: Target) -> ExitCode:
    """Check that the broker answers and each queue's work, due and failed queues exist.

    Declares nothing (passive declares only). Exit 0 if all is there, 1 if
    something is missing, 4 if the broker cannot be reached within --timeout.
    """
    settings = target.settings(queues)
    topology = settings.topology

    async def inspect() -> list[tuple[str, list[str]]]:
        async with QueueInspector(settings) as inspector:
            reached = f" (on {inspector.node})" if len(settings.urls) > 1 else ""
            click.echo(f"{settings.broker}: reachable{reached}")
            results = []
            for queue in settings.queues:
                wanted = {
                    "work queue": topology.work_queue(queue),
                    "due queue": topology.due_queue(queue),
                    "failed queue": topology.failed_queue(queue),
                }
                missing = [
                    f"{kind} {name!r}"
                    for kind, name in wanted.items()
                    if await inspector.stat(name) is None
                ]
                results.append((queue, missing))
            return results

    ok = True
    for queue, missing in asyncio.run(inspect()):
        if missing:
            ok = False
            click.echo(f"{queue}: missing {', '.join(missing)}")
        else:
            click.echo(f"{queue}: ok")
    if not ok:
        click.echo(
            "a worker declares its queues when it starts (amqp-worker run ...); "
            "a publisher declares only the work queue",
            err=True,
        )
    return ExitCode.OK if ok else ExitCode.FAILURE
