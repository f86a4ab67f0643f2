"""Queues declared by an older amqp-worker: accepted as they are, with a way to upgrade them.

RabbitMQ refuses (406 PRECONDITION_FAILED) to re-declare a queue with other
arguments, and cannot add arguments to an existing queue. This version gives
quorum queues that hold jobs an explicit ``x-delivery-limit`` and
dead-lettering into the failed-jobs queue (so RabbitMQ 4.x, whose default
limit is 20, never drops a job). A deployment whose quorum queues were
declared by the previous version lacks them: rather than fail to start, the
worker uses the queue as it is and logs a WARNING with the ``rabbitmqctl
set_policy`` command that adds the same protection to the existing queue.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from .topology import DELIVERY_LIMIT_ARGUMENTS

__all__ = ["legacy_arguments", "warn_legacy_queue"]

logger = logging.getLogger("amqp_worker")

_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")
_NONE_BEFORE = re.compile(r"but current is none")


def legacy_arguments(wanted: dict[str, Any], exc: BaseException) -> dict[str, Any] | None:
    """The arguments to declare with instead of ``wanted`` after the broker's 406 ``exc``.

    Only when the queue exists *without* one of this version's new quorum
    arguments (the reply says ``current is none``); then ``wanted`` minus
    those. None for any other conflict, which stays an error.
    """
    reply = str(exc.args[0]) if exc.args else str(exc)
    match = _INEQUIVALENT.search(reply)
    if match is None or match.group(1) not in DELIVERY_LIMIT_ARGUMENTS:
        return None
    if not _NONE_BEFORE.search(reply) or wanted.get("x-queue-type") != "quorum":
        return None
    return {key: value for key, value in wanted.items() if key not in DELIVERY_LIMIT_ARGUMENTS}


def upgrade_policy(name: str, wanted: dict[str, Any]) -> str:
    """The ``rabbitmqctl set_policy`` command that gives queue ``name`` what ``wanted`` adds."""
    definition = {
        key.removeprefix("x-"): value
        for key, value in sorted(wanted.items())
        if key in DELIVERY_LIMIT_ARGUMENTS
    }
    pattern = "^" + re.escape(name) + "$"
    return (
        f"rabbitmqctl set_policy --apply-to quorum_queues amqp-worker-{name} "
        f"'{pattern}' '{json.dumps(definition, separators=(',', ':'))}'"
    )


def warn_legacy_queue(name: str, wanted: dict[str, Any]) -> None:
    """Say that ``name`` runs without this version's delivery limit, and how to add it."""
    logger.warning(
        "quorum queue %r was declared by an older amqp-worker, without a delivery limit and "
        "dead-lettering into the failed-jobs queue: on RabbitMQ 4.x a job delivered more "
        "than 20 times would be dropped from it. Add them with a policy: %s",
        name,
        upgrade_policy(name, wanted),
    )
