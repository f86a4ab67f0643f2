"""The public API is curated: ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import amqp_worker
from amqp_worker import errors


def test_all_is_sorted_and_unique() -> None:
    assert list(amqp_worker.__all__) == sorted(set(amqp_worker.__all__))


def test_everything_in_all_exists() -> None:
    for name in amqp_worker.__all__:
        assert hasattr(amqp_worker, name), name


def test_no_public_name_is_left_out() -> None:
    public = {
        name
        for name, value in vars(amqp_worker).items()
        if not name.startswith("_") and not isinstance(value, type(amqp_worker))
    }
    assert public <= set(amqp_worker.__all__)


def test_every_error_derives_from_the_one_base_and_is_exported() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.AmqpWorkerError)
        assert cls.__doc__, name
        assert name in amqp_worker.__all__
        assert name in errors.__doc__, f"{name} is missing from the tree in errors.py"
