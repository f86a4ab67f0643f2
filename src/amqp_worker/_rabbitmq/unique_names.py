"""Lock queues of unique jobs: names, arguments and the token, as pure functions.

Beside :mod:`amqp_worker._rabbitmq.topology` (kept under its size limit):
no I/O here, unit-tested without a broker. One classic queue per live key::

    <name>.unique.k.<key>       the key itself, when the whole name is a legal queue name
    <name>.unique.h.<sha256>    any other key (too long, or with characters a name cannot hold)

The ``k.``/``h.`` marks keep the two forms apart: no key can name another's
hashed queue. Keys are scoped by the worker ``name`` only (not
``queue_prefix``): a key is one lock whatever queue its jobs go to.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from amqp_worker._core.job import MAX_NAME_BYTES, QUEUE_NAME_CHARS
from amqp_worker._core.unique import MAX_UNIQUE_FOR_S

__all__ = [
    "LOCK_QUEUE_EXPIRES_MS",
    "lock_queue",
    "lock_queue_arguments",
    "token_body",
    "token_holder",
    "token_ttl_ms",
]

#: ``x-expires`` of a lock queue: the longest window plus a day. Safe because a lock
#: queue holds a token, never a job, and every take declares the queue (which restarts
#: its idle clock) before publishing a token that lives at most MAX_UNIQUE_FOR_S:
#: a queue cannot expire under a live token. It only sweeps queues nobody released
#: (their job never finished, or finished after its window).
LOCK_QUEUE_EXPIRES_MS = int((MAX_UNIQUE_FOR_S + 24 * 3600) * 1000)


def lock_queue(name: str, key: str) -> str:
    """The lock queue of ``key`` under the worker ``name``."""
    plain = f"{name}.unique.k.{key}"
    if QUEUE_NAME_CHARS.fullmatch(plain) and len(plain.encode("utf-8")) <= MAX_NAME_BYTES:
        return plain
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    hashed = f"{name}.unique.h.{digest}"
    if len(hashed.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"the worker name {name[:60]!r}... is too long for lock queue names")
    return hashed


def lock_queue_arguments() -> dict[str, Any]:
    """A classic queue that holds one token at most: a second publish is nacked.

    Classic, whatever ``queue_type``: a quorum queue per key would cost a Raft
    group each (docs/controls.md has the measured cost of classic ones).
    """
    return {
        "x-queue-type": "classic",
        "x-max-length": 1,
        "x-overflow": "reject-publish",
        "x-expires": LOCK_QUEUE_EXPIRES_MS,
    }


def token_ttl_ms(window_s: float) -> int:
    """The token's per-message TTL: the lock's window, rounded up to a whole ms."""
    return max(1, math.ceil(window_s * 1000))


def token_body(key: str, job_id: str) -> bytes:
    """The token: which key, held by which job (a release checks it is its own)."""
    return json.dumps({"key": key, "job_id": job_id}, separators=(",", ":")).encode()


def token_holder(body: bytes) -> str | None:
    """The job id a token names, or None for anything that is not a token."""
    try:
        holder = json.loads(body).get("job_id")
    except (ValueError, AttributeError):
        return None
    return holder if isinstance(holder, str) else None
