"""``amqp-worker asyncapi MODULE:ATTR``: print the AsyncAPI 3.0 document of a worker."""

from __future__ import annotations

import json

import click

from amqp_worker._rabbitmq.asyncapi import asyncapi_document

from .common import ExitCode
from .loading import load_amqp_worker

__all__ = ["asyncapi"]


@click.command()
@click.argument("target", metavar="MODULE:ATTR")
@click.option("--title", metavar="TEXT", help="The document's title. [default: '<name> jobs']")
@click.option(
    "--api-version",
    default="1.0.0",
    show_default=True,
    metavar="VERSION",
    help="The version of your job API, as info.version.",
)
def asyncapi(target: str, title: str | None, api_version: str) -> ExitCode:
    """Print the AsyncAPI 3.0 document of the worker MODULE:ATTR names.

    One channel per queue (and one for its delayed jobs), one message per
    handler with its args schema (free-form for a dict), the job envelope's
    schema, and the AMQP bindings: exchange, routing key, durable, persistent
    delivery. Imports the module like `run` does; connects to nothing.
    """
    worker = load_amqp_worker(
        target, "the AsyncAPI document describes the queues and exchanges of an AMQPWorker"
    )
    document = asyncapi_document(
        worker.settings, worker.handler_specs, title=title, version=api_version
    )
    click.echo(json.dumps(document, indent=2, sort_keys=False))
    return ExitCode.OK
