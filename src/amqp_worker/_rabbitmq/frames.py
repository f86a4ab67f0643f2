"""The AMQP frames of one ``basic.publish``, encoded straight to bytes.

A publish is three frames or more: the ``basic.publish`` method, the content
header (body size and properties), and the body in frames of at most
``frame_max``. aiormq builds each through pamqp's generic marshaller, which
looks every field's type up by name; on a job queue that was the largest
cost of publishing in the client (bench/README.md).

Here the method frame of an (exchange, routing key) pair is encoded once, by
aiormq, and kept (it never changes on a channel), and the properties are
encoded in the order and with the flags pamqp uses, by pamqp's own field
encoders except for the common cases (a short string, an aware timestamp,
small ints and strings in the headers table), which are written inline. The
bytes are the same as aiormq's; ``tests/rabbitmq/test_frames.py`` checks
that, value type by value type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiormq.abc import ChannelFrame
from pamqp import commands, encode

__all__ = ["PublishFrames", "encode_job_properties", "encode_properties"]

Properties = commands.Basic.Properties

_BYTE = struct.Struct("B")
_LONG = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">Q")
#: A short string's length prefix, by length.
_LENGTHS = tuple(_BYTE.pack(n) for n in range(256))


def _short_string(value: Any) -> bytes:
    # pamqp's encode.short_string without its generic checks; anything else goes to it.
    if type(value) is str:
        data = value.encode("utf-8")
        if len(data) <= 255:
            return _LENGTHS[len(data)] + data
    return encode.short_string(value)


def _timestamp(value: Any) -> bytes:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return _TIMESTAMP.pack(int(value.timestamp()))
    return encode.timestamp(value)  # naive (pamqp takes it as UTC), struct_time, or an error


def _table(table: Any) -> bytes:
    """pamqp's ``encode.field_table``, with the common values (short ints, strings) inline.

    Whatever is not plainly one of those (a long key, another type, a bad
    value) is left to pamqp for the whole table, so its bytes, warnings and
    errors are pamqp's own.
    """
    if not table or type(table) is not dict or encode.DEPRECATED_RABBITMQ_SUPPORT:
        return encode.field_table(table)
    parts = []
    for key, value in sorted(table.items()):
        if type(key) is not str:
            return encode.field_table(table)
        name = key.encode("utf-8")
        if len(name) > 128:
            return encode.field_table(table)
        parts.append(_LENGTHS[len(name)] + name)
        kind = type(value)
        if kind is int and -128 <= value <= 127:
            parts.append(_SMALL_INTS[value + 128])
        elif kind is str:
            data = value.encode("utf-8")
            parts.append(b"S" + _LONG.pack(len(data)) + data)
        else:
            try:
                parts.append(encode.encode_table_value(value))
            except TypeError:
                return encode.field_table(table)  # raises with pamqp's message
    data = b"".join(parts)
    return _LONG.pack(len(data)) + data


#: A table value of -128..127: type ``b`` and a signed byte.
_SMALL_INTS = tuple(b"b" + struct.pack(">b", n) for n in range(-128, 128))

#: Each property in wire order: its name, its flag bit, and the encoder for its type.
_FIELDS: tuple[tuple[str, int, Callable[[Any], bytes]], ...] = tuple(
    (
        name,
        Properties.flags[name],
        {
            "shortstr": _short_string,
            "table": _table,
            "octet": encode.octet,
            "timestamp": _timestamp,
        }[getattr(Properties, "_" + name)],
    )
    for name in Properties.__slots__
)
_FLAGS = struct.Struct(">H")
#: Frame type, channel, payload size.
_FRAME = struct.Struct(">BHI")
#: A content header frame: type 2, channel, size; class 60 (basic), weight 0, body size.
_HEADER = struct.Struct(">BHIHHQ")
_HEADER_PAYLOAD = _HEADER.size - _FRAME.size
_END = b"\xce"
#: Method frames kept per channel; the (exchange, routing key) pairs of one
#: worker are few (queues times delay levels), so this bound is never reached in use.
MAX_CACHED = 4096


def encode_properties(properties: Properties) -> bytes:
    """``properties`` as pamqp writes them in a content header: flags, then each one set.

    A property that is None or the empty string is left out, as pamqp does.
    Values the encoders refuse raise their ``TypeError`` / ``ValueError`` / ``struct.error``.
    """
    flags = 0
    parts = [b""]
    for name, flag, encoder in _FIELDS:
        value = getattr(properties, name)
        if value is not None and value != "":
            flags |= flag
            parts.append(encoder(value))
    parts[0] = _FLAGS.pack(flags)
    return b"".join(parts)


_JOB_FLAGS = _FLAGS.pack(
    sum(
        Properties.flags[name]
        for name in (
            "content_type",
            "headers",
            "delivery_mode",
            "message_id",
            "timestamp",
            "message_type",
        )
    )
)
_JOB_FLAGS_PRIORITY = _FLAGS.pack(_FLAGS.unpack(_JOB_FLAGS)[0] | Properties.flags["priority"])
_PERSISTENT = encode.octet(2)


def encode_job_properties(
    content_type: str,
    headers: dict[str, Any],
    message_id: str,
    timestamp: datetime,
    message_type: str,
    priority: int | None = None,
) -> bytes:
    """The properties of a persistent job message, as :func:`encode_properties` writes them.

    Every argument but ``priority`` must be set (non-empty): a job always has
    them all, so the flags are fixed and no property needs looking up.
    """
    if priority is None:
        flags, middle = _JOB_FLAGS, _PERSISTENT
    else:
        # Priority follows delivery_mode on the wire (AMQP 0-9-1 property order).
        flags, middle = _JOB_FLAGS_PRIORITY, _PERSISTENT + encode.octet(priority)
    return b"".join(
        (
            flags,
            _short_string(content_type),
            _table(headers),
            middle,
            _short_string(message_id),
            _timestamp(timestamp),
            _short_string(message_type),
        )
    )


class PublishFrames:
    """Encodes publishes for one channel: its number and its largest body frame are fixed."""

    __slots__ = ("_max_body", "_methods", "_number")

    def __init__(self, number: int, max_body: int) -> None:
        if max_body < 1:
            raise ValueError(f"max_body must be positive, got {max_body}")
        self._number = number
        self._max_body = max_body
        self._methods: dict[tuple[str, str], bytes] = {}

    def method(self, exchange: str, routing_key: str) -> bytes:
        """The ``basic.publish`` frame (mandatory) for ``exchange`` and ``routing_key``."""
        key = (exchange, routing_key)
        frame = self._methods.get(key)
        if frame is None:
            # aiormq's own encoding, once: pamqp checks the names here (length,
            # characters) and raises as it would for aiormq's basic_publish.
            publish = commands.Basic.Publish(
                exchange=exchange, routing_key=routing_key, mandatory=True
            )
            frame = ChannelFrame.marshall(channel_number=self._number, frames=[publish]).payload
            if len(self._methods) >= MAX_CACHED:
                self._methods.clear()
            self._methods[key] = frame
        return frame

    def encode(self, exchange: str, routing_key: str, body: bytes, encoded: bytes) -> list[bytes]:
        """Every frame of one publish, in order, as byte strings to write one after another.

        ``encoded`` is the properties as :func:`encode_properties` gives them.
        """
        number = self._number
        frames = [
            self.method(exchange, routing_key),
            _HEADER.pack(2, number, _HEADER_PAYLOAD + len(encoded), 60, 0, len(body)),
            encoded,
            _END,
        ]
        size = len(body)
        if size <= self._max_body:
            if size:
                frames += (_FRAME.pack(3, number, size), body, _END)
            return frames
        view = memoryview(body)
        for start in range(0, size, self._max_body):
            chunk = view[start : start + self._max_body]
            frames += (_FRAME.pack(3, number, len(chunk)), bytes(chunk), _END)
        return frames
