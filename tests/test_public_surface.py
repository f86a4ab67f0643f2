"""Every type a worker's public attribute returns is exported and documented."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import pytest

import amqp_worker
from amqp_worker import AMQPWorker, FailedJobs, SimpleWorker, Worker

BUILTINS = (bool, int, float, str, tuple, list, dict, type(None))


def _exported(kind: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin is typing.Union or origin is types.UnionType:
        return all(_exported(arg) for arg in typing.get_args(kind))
    if origin is not None:
        return origin in BUILTINS or _exported(origin)
    if kind in BUILTINS:
        return True
    return getattr(amqp_worker, getattr(kind, "__name__", ""), None) is kind


def _public_attributes(worker: Any) -> dict[str, Any]:
    """Public non-method attributes, with the declared type of each property."""
    found: dict[str, Any] = {}
    for name in dir(worker):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(type(worker), name, None)
        if isinstance(static, property):
            assert static.fget is not None
            hints = typing.get_type_hints(static.fget, vars(amqp_worker) | vars(typing))
            # Written once, on the Worker protocol or the class itself: getdoc finds it in the MRO.
            assert inspect.getdoc(static), f"{type(worker).__name__}.{name} has no docstring"
            found[name] = hints["return"]
        elif static is None:  # an instance attribute
            found[name] = type(getattr(worker, name))
    return found


@pytest.mark.parametrize("make", [SimpleWorker, lambda: AMQPWorker("amqp://u:p@127.0.0.1:1/")])
def test_public_attributes_return_exported_types(make: Any) -> None:
    worker = make()
    assert isinstance(worker, Worker)
    assert isinstance(worker.failed, FailedJobs)
    attributes = _public_attributes(worker)
    assert "broker" not in attributes  # the transport is private
    for name, kind in attributes.items():
        assert _exported(kind), f"{type(worker).__name__}.{name} returns unexported {kind!r}"


def test_every_public_method_has_a_docstring() -> None:
    for cls in (SimpleWorker, AMQPWorker, Worker, FailedJobs):
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"
