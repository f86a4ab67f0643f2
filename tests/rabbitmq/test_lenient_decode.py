"""pamqp, patched by amqp_worker._rabbitmq.lenient_decode, reads what other clients may write."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from aio_pika.message import decode_timestamp
from pamqp import commands, decode, frame, header

from amqp_worker._rabbitmq import lenient_decode


@pytest.fixture(autouse=True)
def _installed() -> None:
    lenient_decode.install()


def _table(*entries: bytes) -> bytes:
    raw = b"".join(entries)
    return struct.pack(">I", len(raw)) + raw


def _entry(name: bytes, kind: bytes, value: bytes) -> bytes:
    return struct.pack("B", len(name)) + name + kind + value


def test_short_strings_that_are_not_utf8_decode_with_replacement_characters() -> None:
    assert decode.by_type(b"\x03id\xff", "shortstr") == (4, "id\ufffd")
    assert decode.by_type(b"\x02ok", "shortstr") == (3, "ok")  # valid text: as before


def test_timestamps_no_datetime_can_hold_decode_as_none() -> None:
    assert decode.by_type(struct.pack(">Q", 2**63 - 1), "timestamp") == (8, None)
    at = datetime(2030, 1, 2, tzinfo=UTC)
    assert decode.by_type(struct.pack(">Q", int(at.timestamp())), "timestamp") == (8, at)
    with pytest.raises(ValueError, match="timestamp"):
        decode.by_type(b"\x00\x01", "timestamp")  # truncated: still an error


def test_header_tables_keep_every_entry_whatever_its_name_or_time() -> None:
    raw = _table(
        _entry(b"\xff\xfea", b"I", struct.pack(">i", 5)),
        _entry(b"ts", b"T", struct.pack(">Q", 2**63 - 1)),
        _entry(b"deep", b"F", _table(_entry(b"\xc3", b"T", struct.pack(">Q", 2**64 - 1)))),
        _entry(b"ok", b"S", struct.pack(">I", 2) + b"hi"),
    )
    assert decode.by_type(raw, "table") == (
        len(raw),
        {"\ufffd\ufffda": 5, "ts": None, "deep": {"\ufffd": None}, "ok": "hi"},
    )
    with pytest.raises(ValueError, match="exceeds"):
        decode.by_type(raw[:-3], "table")  # cut short: still an error


def test_a_content_header_another_client_wrote_decodes_instead_of_closing_the_connection() -> None:
    at = datetime(2001, 2, 3, tzinfo=UTC)
    properties = commands.Basic.Properties(
        message_id="AA", message_type="BB", timestamp=at, headers={"CC": 1}
    )
    frame_bytes = frame.marshal(header.ContentHeader(0, 10, properties), 1)
    for good, bad in (
        (b"\x02AA", b"\x02\xff\xfe"),
        (b"\x02BB", b"\x02\xc3("),
        (b"\x02CC", b"\x02\xed\xa0"),
        (struct.pack(">Q", int(at.timestamp())), struct.pack(">Q", 2**63 - 1)),
    ):
        assert frame_bytes.count(good) == 1
        frame_bytes = frame_bytes.replace(good, bad)
    _, _, decoded = frame.unmarshal(frame_bytes)
    assert isinstance(decoded, header.ContentHeader)
    assert decoded.properties.message_id == "\ufffd\ufffd"
    assert decoded.properties.message_type == "\ufffd("
    assert decoded.properties.timestamp is None
    assert decoded.properties.headers == {"\ufffd\ufffd": 1}
    # aio-pika makes its incoming message of these without complaint.
    assert decode_timestamp(decoded.properties.timestamp) is None


def test_tolerant_decoding_is_idempotent() -> None:
    lenient_decode.install()
    lenient_decode.install()
    assert decode.by_type(b"\x01\xff", "shortstr") == (2, "\ufffd")
