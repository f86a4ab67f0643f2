"""Read what RabbitMQ relays from other clients, even where the AMQP client would choke.

RabbitMQ checks neither that a short string (``message_id``, ``type``, a
header's name) is UTF-8 nor that a timestamp is a date. pamqp, under aio-pika,
fails on the whole frame for either; aiormq then closes the connection, the
message is redelivered on the next one, and so on forever. :func:`install`
makes pamqp read such values leniently (see its docstring). It patches
pamqp's decoder functions, the only place where this can be done; a test
checks, on the installed pamqp, that it takes effect.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pamqp import common, decode

__all__ = ["install"]

_strict_short_str = decode.short_str
_strict_timestamp = decode.timestamp


def _short_str(value: bytes) -> tuple[int, str]:
    """A short string (a property such as ``message_id``, a routing key); invalid UTF-8 as U+FFFD."""
    try:
        return _strict_short_str(value)
    except UnicodeDecodeError:
        length = value[0]
        return length + 1, value[1 : length + 1].decode("utf-8", "replace")


def _timestamp(value: bytes) -> tuple[int, datetime | None]:
    """A timestamp (the property, or a header value); None if no ``datetime`` can hold it."""
    try:
        return _strict_timestamp(value)
    except (ValueError, OverflowError, OSError):
        if len(value) < common.Struct.timestamp.size:
            raise  # truncated data, not a value out of range
        return common.Struct.timestamp.size, None


def _field_table(value: bytes) -> tuple[int, dict[str, Any]]:
    """A header table, as pamqp reads it, except that a name that is not UTF-8 gets U+FFFD."""
    try:
        length = common.Struct.integer.unpack(value[0:4])[0]
        offset = 4
        end = offset + length
        if end > len(value):
            raise ValueError("Field table length exceeds available data")
        data: dict[str, Any] = {}
        while offset < end:
            key_length = common.Struct.byte.unpack_from(value, offset)[0]
            offset += 1
            if offset + key_length > end:
                raise ValueError("Field table key length exceeds data")
            key = value[offset : offset + key_length].decode("utf-8", "replace")
            offset += key_length
            consumed, result = decode.embedded_value(value[offset:])
            offset += consumed
            data[key] = result
        return end, data
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack data") from err


_TOLERANT: dict[str, tuple[Callable[..., Any], tuple[bytes, ...]]] = {
    "shortstr": (_short_str, ()),
    "timestamp": (_timestamp, (b"T",)),
    "table": (_field_table, (b"F",)),
}


def install() -> None:
    """Let the AMQP client read the properties and headers RabbitMQ relays, whatever they hold.

    RabbitMQ checks neither that a short string (``message_id``, ``type``,
    a header's name, a routing key) is UTF-8 nor that a timestamp (the
    property, or a header value) is a date. pamqp, under aio-pika, fails on
    the whole frame for either, and aiormq then closes the connection: the
    message goes back to its queue, is delivered on the next connection,
    closes that one too, and so on forever, while no other job runs. Here
    invalid UTF-8 is read with U+FFFD in place of the bad bytes, and a
    timestamp beyond ``datetime``'s range as None; the message then runs or
    is parked by its body like any other. Everything else decodes exactly as
    before. This changes pamqp for the whole process (other aio-pika users
    included: they too are spared the closed connection). Idempotent; every
    :class:`~amqp_worker._rabbitmq.broker.Broker` calls it when it is made.
    """
    for name, (function, table_types) in _TOLERANT.items():
        decode.METHODS[name] = function
        for table_type in table_types:
            decode.TABLE_MAPPING[table_type] = function
    decode.short_str = _short_str
    decode.timestamp = _timestamp  # type: ignore[assignment]
    decode.field_table = _field_table
