"""An AsyncAPI 3.0 document of a worker: its queues, handlers, args schemas and AMQP bindings.

The contract between publishers and consumers, written down: one channel per
job queue (the direct exchange ``name``, routing key = ``Job.queue``), one
channel per queue for delayed jobs (the due exchange ``name.due``, with the
``aw-due-ms`` header), one message per handler whose payload is the job
envelope with ``handler`` fixed and ``args`` typed by the handler's model
(free-form for a ``dict`` handler), and a send and a receive operation per
channel. Pure: built from the settings and handlers, no broker needed.
``amqp-worker asyncapi MODULE:ATTR`` prints it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from amqp_worker._core.handlers import HandlerSpec
from amqp_worker._core.job import Job

from .inspection import vhost_of
from .messages import DUE_HEADER
from .settings import AMQPSettings

__all__ = ["ASYNCAPI_VERSION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
BINDING_VERSION = "0.3.0"
REF = "#/components/schemas/{model}"

#: The args of a handler that takes a plain dict: any JSON object.
FREE_FORM = {"type": "object", "additionalProperties": True, "description": "Any JSON object."}


def _schemas(handlers: Mapping[str, HandlerSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Component schemas (the envelope ``Job`` and every args model) and each handler's args."""
    models: list[type[BaseModel]] = [Job]
    models += sorted(
        {spec.args_model for spec in handlers.values() if spec.args_model is not None},
        key=lambda model: model.__name__,
    )
    keyed, top = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    args: dict[str, Any] = {}
    for name, spec in sorted(handlers.items()):
        if spec.args_model is None:
            args[name] = FREE_FORM
        else:
            args[name] = keyed[(spec.args_model, "validation")]
    return components, args


def _message(name: str, spec: HandlerSpec, args_schema: Any) -> dict[str, Any]:
    envelope = {"$ref": REF.format(model="Job")}
    doc = (spec.func.__doc__ or "").strip().split("\n\n")[0]
    return {
        "name": name,
        "title": name,
        "summary": doc or f"A job for the {name} handler.",
        "contentType": "application/json",
        "payload": {
            "allOf": [
                envelope,
                {
                    "type": "object",
                    "required": ["handler"],
                    "properties": {"handler": {"const": name}, "args": args_schema},
                },
            ]
        },
        "bindings": {"amqp": {"messageType": "amqp-worker.job", "bindingVersion": BINDING_VERSION}},
    }


def _channel(
    address: str,
    title: str,
    description: str,
    exchange: dict[str, Any],
    message_refs: dict[str, Any],
) -> dict[str, Any]:
    """A channel routed by key on ``exchange``, carrying every handler's message."""
    return {
        "address": address,
        "title": title,
        "description": description,
        # A copy per channel: a YAML dump would otherwise write anchors and aliases.
        "messages": copy.deepcopy(message_refs),
        "bindings": {
            "amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": BINDING_VERSION}
        },
    }


def _operation_messages(channel: str, messages: Mapping[str, Any]) -> list[dict[str, str]]:
    """References to ``channel``'s message of each handler, as an operation lists them."""
    return [{"$ref": f"#/channels/{_escape(channel)}/messages/{name}"} for name in messages]


def _exchange(name: str, vhost: str) -> dict[str, Any]:
    return {"name": name, "type": "direct", "durable": True, "autoDelete": False, "vhost": vhost}


def asyncapi_document(
    settings: AMQPSettings,
    handlers: Mapping[str, HandlerSpec],
    *,
    title: str | None = None,
    version: str = "1.0.0",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (as a dict, ready for JSON or YAML) of a worker's contract."""
    topology = settings.topology
    parts = urlsplit(settings.urls[0])
    vhost = vhost_of(settings)
    host = f"{parts.hostname}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}"
    components, args = _schemas(handlers)
    messages = {name: _message(name, spec, args[name]) for name, spec in sorted(handlers.items())}
    message_refs = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for queue in settings.queues:
        now, later = queue, f"{queue}.delayed"
        channels[now] = _channel(
            queue,
            f"jobs for {queue}",
            f"Publish a job to exchange `{topology.exchange}` with routing key = `Job.queue` "
            f"(`{queue}`); it lands in the durable queue `{topology.work_queue(queue)}`. "
            "Persistent (delivery mode 2), with publisher confirms and `mandatory`.",
            _exchange(topology.exchange, vhost),
            message_refs,
        )
        channels[later] = _channel(
            queue,
            f"delayed jobs for {queue}",
            f"Publish a delayed job to exchange `{topology.due_exchange}` with routing key "
            f"`{queue}` and the header `{DUE_HEADER}` (its due time, ms since the Unix "
            "epoch). A worker holds it until then, sending it through the per-TTL delay "
            "queues while it is more than the hold window away "
            f"({settings.delay_window_ms} ms); Python publishers use perform_in/perform_at, "
            "which route through those delay queues directly.",
            _exchange(topology.due_exchange, vhost),
            message_refs,
        )
        for channel in (now, later):
            operations[f"perform.{channel}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{_escape(channel)}"},
                "summary": f"Enqueue a job on {channel}.",
                "messages": _operation_messages(channel, messages),
                "bindings": {
                    "amqp": {
                        "deliveryMode": 2,
                        "mandatory": True,
                        "bindingVersion": BINDING_VERSION,
                    }
                },
            }
        operations[f"run.{queue}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{_escape(now)}"},
            "summary": (
                f"Workers consume {topology.work_queue(queue)} and ack each job only after it "
                f"ran, or was retried or parked in {topology.failed_queue(queue)}."
            ),
            "messages": _operation_messages(now, messages),
            "bindings": {"amqp": {"ack": True, "bindingVersion": BINDING_VERSION}},
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": title or f"{settings.name} jobs",
            "version": version,
            "description": (
                "Jobs of the amqp-worker workers named "
                f"`{settings.name}`: JSON job envelopes (docs/job.schema.json) on RabbitMQ."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": host,
                "protocol": "amqps" if parts.scheme == "amqps" else "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/" if vhost == "/" else "/" + vhost,
                "description": "The broker (credentials are never part of this document).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": components,
            "messages": messages,
        },
    }


def _escape(key: str) -> str:
    """A key as one JSON-pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")
