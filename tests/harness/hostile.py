"""Hostile message bodies: Hypothesis strategies, and what a worker must make of each.

Every generated case is a :class:`Case`: a *kind* (what it was built to be),
its body, and the properties and headers it is published with. :func:`outcome`
says what the worker must do with a body, ``"ran"`` or the
:class:`~amqp_worker.FailureReason` it is parked with; :data:`ALLOWED` says
which outcomes each kind was built to end in, so a parser that suddenly
accepted (or refused) something, or a strategy that drifted, shows up as a
case outside its kind's set.

The worker under test registers :data:`HANDLERS` (``plain``, taking a dict,
and ``typed``, taking :class:`Typed`) and has ``max_message_bytes`` of
:data:`MAX_BYTES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from amqp_worker import FailureReason, Job

#: Bodies generated in CI; ``AMQP_WORKER_HOSTILE_PAYLOADS=10000`` asks for more.
DEFAULT_COUNT = 2000
COUNT_VARIABLE = "AMQP_WORKER_HOSTILE_PAYLOADS"
#: The worker's max_message_bytes in these runs: small, so too_large bodies stay cheap.
MAX_BYTES = 8192
#: The header that numbers each published case, so every message can be accounted for.
INDEX_HEADER = "hostile-index"

RAN = "ran"


class Typed(BaseModel):
    """The args model of the ``typed`` handler."""

    n: int
    label: str = ""


HANDLERS = ("plain", "typed")


def hostile_count() -> int:
    """How many bodies to generate: :data:`DEFAULT_COUNT`, or the environment's number."""
    raw = os.environ.get(COUNT_VARIABLE, "").strip()
    return int(raw) if raw else DEFAULT_COUNT


def outcome(body: bytes) -> str:
    """What a worker with :data:`HANDLERS` must do with ``body``: ``"ran"`` or a reason's value."""
    if len(body) > MAX_BYTES:
        return FailureReason.TOO_LARGE.value
    try:
        job = Job.from_json(body)
    except ValidationError as exc:
        bad_json = any(error["type"] == "json_invalid" for error in exc.errors())
        return (FailureReason.INVALID_JSON if bad_json else FailureReason.INVALID_JOB).value
    if job.handler == "plain":
        return RAN
    if job.handler != "typed":
        return FailureReason.UNKNOWN_HANDLER.value
    try:
        Typed.model_validate(job.args)
    except ValidationError:
        return FailureReason.INVALID_ARGS.value
    return RAN


@dataclass(frozen=True)
class Case:
    """One message to publish: what it was built to be, its body, how it is sent."""

    kind: str
    body: bytes
    due: bool = False
    """Published to the due queue (with ``headers``' ``aw-due-ms``) rather than the work queue."""
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = "application/json"
    content_encoding: str | None = None


_PARKED_AS_JOB = {FailureReason.INVALID_JOB.value}
_ANY_JOB = {
    RAN,
    FailureReason.INVALID_JOB.value,
    FailureReason.UNKNOWN_HANDLER.value,
    FailureReason.INVALID_ARGS.value,
}
#: The outcomes each kind of case was built to end in.
ALLOWED: dict[str, set[str]] = {
    "bytes": {FailureReason.INVALID_JSON.value, *_PARKED_AS_JOB},
    "invalid_utf8": {FailureReason.INVALID_JSON.value},
    "lone_surrogate": {FailureReason.INVALID_JSON.value},
    "json_shape": {FailureReason.INVALID_JSON.value, *_PARKED_AS_JOB},
    "deep": {FailureReason.INVALID_JSON.value, *_PARKED_AS_JOB, RAN},
    "huge_number": {FailureReason.INVALID_JSON.value, *_ANY_JOB},
    "envelope": _ANY_JOB,
    "typed_args": {FailureReason.INVALID_ARGS.value, RAN},
    "too_large": {FailureReason.TOO_LARGE.value},
    "unknown_handler": {FailureReason.UNKNOWN_HANDLER.value, FailureReason.INVALID_JOB.value},
    "good": {RAN},
}

# -- strategies -------------------------------------------------------------------

#: JSON scalars Python's json module writes (finite floats, no surrogates).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
#: Any JSON value, a few levels deep.
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
#: A field's wrong value: a scalar, or a shallow array or object (cheaper than json_values).
odd_values = (
    json_scalars
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
)

#: Numbers as JSON text, from ordinary to far beyond any parser's range.
raw_numbers = st.one_of(
    st.integers(min_value=-(2**200), max_value=2**200).map(str),
    st.builds(lambda n, sign: sign + "9" * n, st.integers(18, 8000), st.sampled_from(["", "-"])),
    st.builds(
        lambda e, sign: f"1e{sign}{e}", st.integers(300, 100_000), st.sampled_from(["", "-"])
    ),
    st.sampled_from(["-0", "0.0", "1E308", "2.5e-324", "123456789012345678901234567890.5"]),
)

_KNOWN_FIELDS = ("handler", "queue", "args", "id", "attempt", "enqueued_at")
_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
#: Texts over the 255-byte limit of names, built rather than drawn (drawing is slow).
_long_texts = st.builds(
    lambda n, c: c * n, st.integers(250, 300), st.sampled_from(["h", "é", "日"])
)
_names = st.sampled_from(HANDLERS) | st.text(max_size=40) | _long_texts

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "handler": _names | odd_values,
        "queue": st.sampled_from(["default", "q.other", "bad*name", ""]) | odd_values,
        "args": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | odd_values,
        "id": st.text(max_size=30) | _long_texts | odd_values,
        "attempt": st.integers(-3, 2**40) | odd_values,
        "enqueued_at": _times.map(datetime.isoformat)
        | _times.map(lambda t: t.replace(tzinfo=None).isoformat())
        | st.text(max_size=30)
        | odd_values,
    },
).flatmap(
    lambda known: st.dictionaries(
        st.text(max_size=10).filter(lambda key: key not in _KNOWN_FIELDS), odd_values, max_size=2
    ).map(lambda extra: {**extra, **known})
)


def _dumps(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


@st.composite
def json_shapes(draw: st.DrawFn) -> bytes:
    """Any JSON that is not a job: scalars, arrays, objects without a handler."""
    value = draw(
        json_scalars
        | st.lists(odd_values, max_size=4)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: k != "handler"), odd_values, max_size=4
        )
        | json_values.filter(lambda v: not isinstance(v, dict) or "handler" not in v)
    )
    return _dumps(value, draw(st.booleans()))


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    """A job whose JSON holds bytes that are not UTF-8 (in a string, or between tokens)."""
    bad = draw(
        st.sampled_from(
            [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]
        )
    )
    text = draw(st.text(max_size=10)).replace("@", "")
    body = _dumps({"handler": "plain", "args": {"s": f"{text}@{text}"}}, draw(st.booleans()))
    if draw(st.booleans()):
        return body.replace(b"@", bad, 1)
    return body[:1] + bad + body[1:]


@st.composite
def lone_surrogates(draw: st.DrawFn) -> bytes:
    """A job with one lone surrogate, as a JSON ``\\udXXX`` escape, somewhere in its text."""
    surrogate = draw(st.characters(categories=["Cs"]))
    # Neighbours that are never surrogates themselves, so it cannot become half of a pair.
    before, after = draw(st.text(max_size=5)), draw(st.text(max_size=5))
    text = before + surrogate + after
    where = draw(st.sampled_from(["handler", "id", "arg", "key", "queue"]))
    job: dict[str, Any] = {"handler": "plain", "args": {"s": "x"}}
    if where == "arg":
        job["args"] = {"s": text}
    elif where == "key":
        job["args"] = {text: 1}
    else:
        job[where] = text
    return _dumps(job)  # ensure_ascii: the surrogate is written as an escape


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """Arrays or objects nested 100 deep and more, as the body or inside a good job's args.

    Never deeper than fits in :data:`MAX_BYTES`: too_large would hide the parser's limit.
    """
    if draw(st.booleans()):
        depth = draw(st.integers(100, 1990))
        nested = "[" * depth + "]" * depth
    else:
        depth = draw(st.integers(100, 580))
        nested = '{"a":' * depth + "1" + "}" * depth
    if draw(st.booleans()):
        return nested.encode()
    return b'{"handler": "plain", "args": {"deep": ' + nested.encode() + b"}}"


@st.composite
def huge_numbers(draw: st.DrawFn) -> bytes:
    """Jobs with numbers of any size where the args, the attempt or the id go."""
    number = draw(raw_numbers)
    handler = draw(st.sampled_from(HANDLERS))
    where = draw(st.sampled_from(["n", "attempt", "id", "body"]))
    if where == "body":
        return number.encode()
    if where == "n":
        return f'{{"handler": "{handler}", "args": {{"n": {number}}}}}'.encode()
    return f'{{"handler": "{handler}", "args": {{"n": 1}}, "{where}": {number}}}'.encode()


@st.composite
def typed_args(draw: st.DrawFn) -> bytes:
    """Valid envelopes for ``typed`` whose args may or may not fit its model."""
    args = draw(
        st.fixed_dictionaries(
            {}, optional={"n": odd_values | st.integers(), "label": odd_values}
        ).flatmap(
            lambda known: st.dictionaries(st.text(max_size=6), json_scalars, max_size=2).map(
                lambda extra: {**extra, **known}
            )
        )
    )
    return _dumps({"handler": "typed", "args": args}, draw(st.booleans()))


@st.composite
def too_large(draw: st.DrawFn) -> bytes:
    """A body over :data:`MAX_BYTES`: a good job with a big arg, or junk."""
    size = draw(st.integers(MAX_BYTES + 1, 3 * MAX_BYTES))
    if draw(st.booleans()):
        return b"\x00" * size
    body = _dumps({"handler": "plain", "args": {"pad": ""}})
    return body.replace(b'""', b'"' + b"x" * size + b'"')


@st.composite
def unknown_handlers(draw: st.DrawFn) -> bytes:
    """Valid jobs for a handler nobody registered (a name with a control character is invalid)."""
    name = draw(st.text(min_size=1, max_size=40).filter(lambda n: n not in HANDLERS))
    job: dict[str, Any] = {
        "handler": name,
        "args": draw(st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)),
    }
    if draw(st.booleans()):
        job["attempt"] = draw(st.integers(0, 2**31 - 1))
    return _dumps(job, draw(st.booleans()))


#: Due-queue headers that all mean "due now": none, past, and values no clock could mean.
_due_now = st.sampled_from(
    [None, 0, -5, 1_000, "soon", "1e3", bytearray(b"\xff"), {"at": 1}, [1, 2], True, 1.5, 2**62]
)

_CONTENT_TYPES = [None, "application/json", "text/plain", "application/xml", "x" * 255]
_ENCODINGS = [None, None, "gzip", "utf-16", "identity"]

_KINDS: dict[str, st.SearchStrategy[bytes]] = {
    "bytes": st.binary(max_size=200),
    "invalid_utf8": invalid_utf8(),
    "lone_surrogate": lone_surrogates(),
    "json_shape": json_shapes(),
    "deep": deep_nesting(),
    "huge_number": huge_numbers(),
    "envelope": envelopes.map(_dumps),
    "typed_args": typed_args(),
    "too_large": too_large(),
    "unknown_handler": unknown_handlers(),
}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """One hostile case of any kind, sent to the work queue or (one in five) the due queue."""
    kind = draw(st.sampled_from(sorted(_KINDS)))
    body = draw(_KINDS[kind])
    headers: dict[str, Any] = {}
    due = draw(st.integers(0, 4)) == 0
    if due:
        value = draw(_due_now)
        if value is not None:
            headers["aw-due-ms"] = value
    return Case(
        kind,
        body,
        due,
        headers,
        draw(st.sampled_from(_CONTENT_TYPES)),
        draw(st.sampled_from(_ENCODINGS)),
    )


def generate(count: int, *, good_every: int = 25) -> list[Case]:
    """``count`` cases: Hypothesis-generated ones, with a good job every ``good_every``.

    Derandomised, so CI publishes the same bodies on every run; the good jobs
    are placed among them, so a worker that stalls on hostile ones cannot
    hide it.
    """
    generated: list[Case] = []
    hypothesis_count = count - count // good_every

    @settings(
        max_examples=hypothesis_count,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def collect(case: Case) -> None:
        generated.append(case)

    collect()
    out: list[Case] = []
    for index, case in enumerate(generated):
        if index % (good_every - 1) == 0:
            out.append(good_case(len(out)))
        out.append(case)
    while len(out) < count:
        out.append(good_case(len(out)))
    return out[:count]


def good_case(number: int) -> Case:
    job = Job(handler="plain", args={"good": number})
    return Case("good", job.to_json())


def due_in_ms(delta: timedelta) -> int:
    """A due time ``delta`` from now, in ms since the epoch (for hand-written due headers)."""
    return int((datetime.now(UTC) + delta).timestamp() * 1000)


def check_kinds(cases_: list[Case], classify: Callable[[bytes], str] = outcome) -> dict[str, int]:
    """Every case's outcome is one its kind allows; return how many of each outcome there are."""
    counts: dict[str, int] = {}
    wrong = []
    for case in cases_:
        result = classify(case.body)
        counts[result] = counts.get(result, 0) + 1
        if result not in ALLOWED[case.kind]:
            wrong.append((case.kind, result, case.body[:120]))
    assert not wrong, f"{len(wrong)} cases outside their kind, e.g. {wrong[:3]}"
    return counts
