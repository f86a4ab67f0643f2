"""The publish frames (amqp_worker._rabbitmq.frames) are byte for byte what aiormq writes; no broker."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from aiormq.abc import ChannelFrame
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands, encode
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from amqp_worker._rabbitmq.frames import PublishFrames, encode_job_properties, encode_properties

Properties = commands.Basic.Properties
WHEN = datetime(2026, 12, 5, 10, 11, 12, 999999, tzinfo=UTC)


def aiormq_frames(
    number: int, exchange: str, routing_key: str, body: bytes, properties: Properties, max_body: int
) -> bytes:
    """What aiormq's basic_publish puts on the wire (its _split_body, its marshall)."""
    chunks = [body[i : i + max_body] for i in range(0, len(body), max_body)]
    frames: list[Any] = [
        commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
        ContentHeader(properties=properties, body_size=len(body)),
        *(ContentBody(chunk) for chunk in chunks),
    ]
    return ChannelFrame.marshall(frames=frames, channel_number=number).payload


PROPERTIES = [
    Properties(),
    Properties(delivery_mode=2),
    Properties(content_type="", message_id="", priority=0),
    Properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"aw-attempt": 0},
        delivery_mode=2,
        priority=9,
        correlation_id="c",
        reply_to="r",
        expiration="1000",
        message_id="m",
        timestamp=WHEN,
        message_type="t",
        user_id="guest",
        app_id="a",
    ),
    Properties(timestamp=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5)))),
    Properties(timestamp=datetime(2026, 1, 1, 12)),  # naive: pamqp takes it as UTC
    Properties(message_id="ünïcödé", message_type="x" * 255),
    Properties(
        headers={
            "small": -128,
            "big": 2**40,
            "edge": 128,
            "neg": -40000,
            "flag": True,
            "off": False,
            "text": "ünï",
            "float": 1.5,
            "none": None,
            "list": [1, "a", {"b": 2}],
            "table": {"x": {"y": [True]}},
            "when": WHEN,
            "dec": Decimal("1.25"),
            "bytes": bytearray(b"\x00\x01"),
            "k" * 128: 1,
        }
    ),
]


@pytest.mark.parametrize("properties", PROPERTIES)
def test_properties_encode_as_pamqp_does(properties: Properties) -> None:
    assert encode_properties(properties) == properties.marshal()


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250, 301])
def test_a_publish_is_the_frames_aiormq_writes(size: int) -> None:
    body = bytes(range(256)) * 2
    body = body[:size]
    properties = PROPERTIES[3]
    frames = PublishFrames(7, max_body=100)
    encoded = frames.encode("ex", "rk", body, encode_properties(properties))
    assert b"".join(encoded) == aiormq_frames(7, "ex", "rk", body, properties, 100)


def test_the_job_properties_are_the_general_encoding() -> None:
    headers: dict[str, Any] = {
        "aw-attempt": 3,
        "aw-due-ms": 1_800_000_000_000,
        "traceparent": "00-ab-cd-01",
    }
    expected = Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="id-1",
        message_type="send_email",
        timestamp=WHEN,
        headers=headers,
    )
    encoded = encode_job_properties("application/json", headers, "id-1", WHEN, "send_email")
    assert encoded == encode_properties(expected) == expected.marshal()


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_a_job_priority_is_encoded_as_pamqp_does(priority: int) -> None:
    expected = Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=priority,
        message_id="id-1",
        message_type="h",
        timestamp=WHEN,
        headers={"aw-attempt": 0},
    )
    encoded = encode_job_properties(
        "application/json", {"aw-attempt": 0}, "id-1", WHEN, "h", priority
    )
    assert encoded == expected.marshal()


def test_a_key_over_128_bytes_is_truncated_as_pamqp_does(caplog: pytest.LogCaptureFixture) -> None:
    properties = Properties(headers={"k" * 200: 1, "a": 2})
    assert encode_properties(properties) == properties.marshal()


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        (Properties(message_id="x" * 256), TypeError),
        (Properties(headers={"bad": object()}), TypeError),  # type: ignore[dict-item]
        (Properties(headers={"huge": 2**64}), TypeError),
        (Properties(headers={1: "not a str key"}), AttributeError),  # type: ignore[dict-item]
    ],
)
def test_what_pamqp_cannot_encode_raises_its_error(
    properties: Properties, error: type[Exception]
) -> None:
    with pytest.raises(error):
        properties.marshal()
    with pytest.raises(error):
        encode_properties(properties)


def test_the_method_frame_is_checked_by_pamqp() -> None:
    with pytest.raises(ValueError, match="exchange"):
        PublishFrames(1, 100).method("bad exchange name!", "rk")


def test_deprecated_rabbitmq_integers_follow_pamqp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "DEPRECATED_RABBITMQ_SUPPORT", True)
    properties = Properties(headers={"n": 200, "m": -5})
    assert encode_properties(properties) == properties.marshal()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=20), json_values, max_size=6))
def test_any_header_table_encodes_as_pamqp_does(headers: dict[str, Any]) -> None:
    properties = Properties(headers=headers, message_id="m", timestamp=WHEN)
    try:
        expected = properties.marshal()
    except (TypeError, ValueError, struct.error) as exc:
        with pytest.raises(type(exc)):
            encode_properties(properties)
        return
    assert encode_properties(properties) == expected
