"""start() tries again, a bounded number of times, after a transient transport error."""

from __future__ import annotations

import pytest

from amqp_worker import SimpleWorker
from amqp_worker._core import base


class Flaky(SimpleWorker):
    """Its first ``failures`` begins fail with ``error``; ``transient`` says whether to retry."""

    def __init__(self, failures: int, error: Exception, transient: bool) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.transient = transient
        self.begins = 0

    def _transient_start_error(self, exc: BaseException) -> bool:  # type: ignore[override]
        return self.transient and exc is self.error

    async def _begin(self) -> None:
        self.begins += 1
        if self.begins <= self.failures:
            raise self.error
        await super()._begin()


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "START_RETRY_S", 0.0)


async def test_a_transient_failure_is_tried_again_and_the_worker_runs() -> None:
    worker = Flaky(1, ConnectionError("541 INTERNAL_ERROR"), transient=True)
    await worker.start()
    assert worker.running
    assert worker.begins == 2
    await worker.stop()


async def test_tries_are_bounded() -> None:
    error = ConnectionError("541 INTERNAL_ERROR")
    worker = Flaky(10, error, transient=True)
    with pytest.raises(ConnectionError):
        await worker.start()
    assert worker.begins == base.START_ATTEMPTS
    assert not worker.running


async def test_any_other_failure_is_raised_at_once() -> None:
    worker = Flaky(1, ValueError("a bug"), transient=False)
    with pytest.raises(ValueError, match="a bug"):
        await worker.start()
    assert worker.begins == 1
    assert not worker.running
