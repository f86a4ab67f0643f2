"""``amqp-worker enqueue --unique-key``: a live key is one clear line and exit 1, nothing enqueued."""

from __future__ import annotations

import asyncio

import pytest

from amqp_worker._rabbitmq.unique_names import lock_queue
from amqp_worker.cli.common import ExitCode
from tests.cli.conftest import Broker, cli, one_line_error
from tests.harness.brokertools import delete_queues, queue_state


def test_unique_for_needs_a_unique_key() -> None:
    result = cli("enqueue", "-q", "a", "-H", "h", "--unique-for", "10m")
    assert result.returncode == ExitCode.CONFIG, (result.stdout, result.stderr)
    assert "--unique-key" in one_line_error(result)


@pytest.mark.broker
def test_a_live_unique_key_exits_1_and_enqueues_nothing(broker: Broker) -> None:
    key = f"{broker.queue}.report-7"
    try:
        job_id = broker.enqueue("h", {}, "--unique-key", key, "--unique-for", "10m")
        assert job_id
        again = broker("enqueue", "-q", broker.queue, "-H", "h", "--unique-key", key)
        assert again.returncode == ExitCode.FAILURE, (again.stdout, again.stderr)
        assert again.stdout == ""
        assert one_line_error(again).endswith(
            f"not enqueued: a job with unique_key {key!r} is still live"
        )
        state = asyncio.run(queue_state(broker.topology.work_queue(broker.queue)))
        assert state is not None
        assert state[0] == 1
    finally:
        asyncio.run(delete_queues([lock_queue(broker.name, key)]))
