"""The local cluster harness (tests/harness/cluster.py): boot, kill, re-election, rejoin.

The ``cluster`` fixture below is the example to copy: module-scoped, so the ~15 s
boot is paid once per module. ``test_dlx_stall_after_leader_kill`` is a measurement,
not a check, and runs only when asked (it boots clusters of its own and takes
minutes)::

    AWTEST_MEASURE_DLX=1 python3 -m pytest tests/harness/test_cluster_harness.py -k dlx_stall -s
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from tests.harness.cluster import Cluster, _our_pids, rabbitmq_available

MESSAGES = 100
QUORUM = {"x-queue-type": "quorum"}

needs_rabbitmq = pytest.mark.skipif(
    not rabbitmq_available(), reason="needs rabbitmq-server installed and root"
)

# Set while the module's cluster is up, so the opt-in measurement (three more nodes
# per run) refuses to run next to it on two cores.
_MODULE_CLUSTER_UP = False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    global _MODULE_CLUSTER_UP
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root")
    with Cluster() as started:
        print(f"\n3-node cluster booted in {started.boot_seconds:.1f}s")
        _MODULE_CLUSTER_UP = True
        try:
            yield started
        finally:
            _MODULE_CLUSTER_UP = False


# -- no broker needed ----------------------------------------------------------------


def test_cluster_plans_distinct_nodes_without_starting_them() -> None:
    cluster = Cluster(size=3)
    try:
        ports = [node.port for node in cluster.nodes]
        assert len(set(ports)) == 3
        assert 5672 not in ports
        assert cluster.urls == [f"amqp://guest:guest@127.0.0.1:{port}/" for port in ports]
        assert cluster.url_list == ",".join(cluster.urls)
        assert len(set(cluster.node_names)) == 3
        assert all(name.endswith("@localhost") for name in cluster.node_names)
        assert "rabbit@localhost" not in cluster.node_names
        assert cluster.node(1) is cluster.nodes[1]
        assert cluster.node(cluster.nodes[2]) is cluster.nodes[2]
        with pytest.raises(ValueError, match="not a node of this cluster"):
            cluster.node(Cluster(size=1).nodes[0])
    finally:
        cluster.close()
    with pytest.raises(RuntimeError, match="closed"):
        cluster.start()
    with pytest.raises(ValueError, match="at least one node"):
        Cluster(size=0)


# -- the safety net ------------------------------------------------------------------

_CRASHING_RUN = """
import os, sys, time
sys.path.insert(0, {root!r})
from tests.harness.cluster import Cluster
cluster = Cluster(size=1)
cluster.start()
print(cluster.directory, *cluster.node_names, flush=True)
time.sleep(600)
"""


@pytest.mark.broker
@needs_rabbitmq
@pytest.mark.timeout(90)
def test_nodes_die_with_a_sigkilled_test_process() -> None:
    """No beam.smp outlives a test process that was SIGKILLed (no atexit runs)."""
    script = _CRASHING_RUN.format(root=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert child.stdout is not None
        root, *names = child.stdout.readline().decode().split()
        assert names, "the child did not start its cluster"
        assert _our_pids(names), "the node is not running"
        assert Path(root).is_dir()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    deadline = time.monotonic() + 20
    while _our_pids(names) or Path(root).exists():
        assert time.monotonic() < deadline, f"left behind: pids {_our_pids(names)}, {root}"
        time.sleep(0.2)


# -- the cluster ---------------------------------------------------------------------


async def _publish(url: str, queue: str, count: int) -> None:
    """Declare a quorum queue through ``url`` and publish ``count`` persistent messages, confirmed."""
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments=QUORUM)
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                    ),
                    routing_key=queue,
                    timeout=30,
                )
                for i in range(count)
            )
        )


async def _consume_all(url: str, queue: str, count: int) -> set[bytes]:
    """Consume and ack ``count`` messages from ``queue`` through ``url``; their bodies."""
    bodies: set[bytes] = set()
    async with await aio_pika.connect(url, timeout=10) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        declared = await channel.declare_queue(queue, durable=True, arguments=QUORUM)
        async with declared.iterator() as messages:
            async for message in messages:
                await message.ack()
                bodies.add(message.body)
                if len(bodies) == count:
                    break
    return bodies


def _online_members(cluster: Cluster, queue: str) -> set[str]:
    rows = json.loads(cluster.ctl("list_queues", "name", "online", "--formatter", "json"))
    return next(set(row["online"]) for row in rows if row["name"] == queue)


@pytest.mark.broker
@needs_rabbitmq
@pytest.mark.timeout(110)
async def test_quorum_queue_survives_leader_kill_and_node_rejoins(cluster: Cluster) -> None:
    assert cluster.running_nodes() == set(cluster.node_names)
    timeout = cluster.nodes[0].ctl(
        "eval", "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout)."
    )
    assert timeout.strip() == "{ok,5000}"

    queue = f"test.cluster.{uuid.uuid4().hex[:8]}"
    first = cluster.nodes[0]
    await _publish(first.url, queue, MESSAGES)
    leader = await asyncio.to_thread(cluster.leader_of, queue)
    # Quorum queue leaders go to the declaring client's node (client-local locator).
    assert leader is first

    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, leader)
    kill_seconds = time.monotonic() - killed_at
    assert not leader.is_running()

    survivor = next(node for node in cluster.nodes if node.is_running())
    async with asyncio.timeout(45):
        bodies = await _consume_all(survivor.url, queue, MESSAGES)
    consumed_seconds = time.monotonic() - killed_at
    assert bodies == {str(i).encode() for i in range(MESSAGES)}
    new_leader = await asyncio.to_thread(cluster.wait_for_leader, queue, not_on=leader)
    assert new_leader is not leader

    restart_seconds = await asyncio.to_thread(cluster.restart, leader)
    assert leader.is_running()
    # restart() checked every running node's view; ask the restarted one once more.
    assert cluster.running_nodes(via=leader) == set(cluster.node_names)
    # Its quorum queue replica comes back too.
    deadline = time.monotonic() + 30
    while leader.node_name not in _online_members(cluster, queue):
        assert time.monotonic() < deadline, "the restarted node's replica never came online"
        await asyncio.sleep(0.5)
    print(
        f"\nkill {kill_seconds:.1f}s; all {MESSAGES} consumed from {survivor.node_name} "
        f"{consumed_seconds:.1f}s after the kill; new leader {new_leader.node_name}; "
        f"restart + rejoin {restart_seconds:.1f}s"
    )


# -- measurement (opt-in) ------------------------------------------------------------

DLX_TTL_MS = 2000
DLX_MESSAGES = 120  # one every 50 ms: expiries span the kill, 3 s in
DLX_WAIT_S = {5000: 60.0, 180000: 240.0}  # how long to wait before calling it a stall

#: Which node leads the source and the target queue; node 1 is the one killed.
DLX_LAYOUTS = {
    "both-on-killed": (0, 0),
    "source-on-killed": (0, 2),
    "target-on-killed": (1, 0),
}


async def _message_count(url: str, queue: str) -> int | None:
    """``queue``'s ready-message count through ``url``; None while it cannot answer."""
    try:
        async with asyncio.timeout(5):
            async with await aio_pika.connect(url, timeout=5) as connection:
                channel = await connection.channel()
                declared = await channel.declare_queue(queue, passive=True)
                return declared.declaration_result.message_count
    except (TimeoutError, aio_pika.exceptions.AMQPError, OSError):
        return None


async def _wait_for_count(url: str, queue: str, expected: int, limit: float) -> float | None:
    """Seconds until ``queue`` holds ``expected`` messages, or None after ``limit`` s."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        count = await _message_count(url, queue)
        if count is not None and count >= expected:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return None


async def _dlx_trial(cluster: Cluster, layout: str, wait: float) -> str:
    """One kill while messages expire; a line of figures (see the test's docstring)."""
    killed, publisher = cluster.nodes[0], cluster.nodes[1]
    source_at, target_at = (cluster.nodes[i] for i in DLX_LAYOUTS[layout])
    suffix = uuid.uuid4().hex[:6]
    source, target = f"dlx.source.{suffix}", f"dlx.target.{suffix}"
    async with await aio_pika.connect(target_at.url, timeout=10) as connection:
        channel = await connection.channel()
        await channel.declare_queue(target, durable=True, arguments=QUORUM)
    async with await aio_pika.connect(source_at.url, timeout=10) as connection:
        channel = await connection.channel()
        await channel.declare_queue(
            source,
            durable=True,
            arguments={
                **QUORUM,
                "x-message-ttl": DLX_TTL_MS,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": target,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
    assert cluster.leader_of(source) is source_at
    assert cluster.leader_of(target) is target_at
    rows = json.loads(cluster.ctl("list_queues", "name", "members", "--formatter", "json"))
    members = next(row["members"] for row in rows if row["name"] == target)
    killed_first = members[0] == killed.node_name

    killed_at = 0.0

    async def kill_later() -> None:
        nonlocal killed_at
        await asyncio.sleep(3)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, killed)

    killer = asyncio.create_task(kill_later())
    confirmed = 0
    async with await aio_pika.connect(publisher.url, timeout=10) as connection:
        channel = await connection.channel(publisher_confirms=True)
        started = time.monotonic()
        for i in range(DLX_MESSAGES):
            await asyncio.sleep(max(0.0, started + i * 0.05 - time.monotonic()))
            with contextlib.suppress(TimeoutError, aio_pika.exceptions.AMQPError):
                await channel.default_exchange.publish(
                    aio_pika.Message(b"%d" % i, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=source,
                    timeout=30,
                )
                confirmed += 1
        last_expiry = time.monotonic() + DLX_TTL_MS / 1000 - killed_at
    await killer

    done = await _wait_for_count(
        publisher.url, target, confirmed, wait - (time.monotonic() - killed_at)
    )
    if done is not None:
        outcome = f"all in target {time.monotonic() - killed_at:.1f}s after the kill"
        await asyncio.to_thread(cluster.restart, killed)
    else:
        stuck = await _message_count(publisher.url, target)
        restarted_at = time.monotonic()
        await asyncio.to_thread(cluster.restart, killed)
        after = await _wait_for_count(publisher.url, target, confirmed, 240)
        recovered = (
            f"{time.monotonic() - restarted_at:.1f}s after restarting node 1"
            if after is not None
            else "not within 240s of restarting node 1"
        )
        outcome = f"STALLED > {wait:.0f}s ({stuck} arrived); all in target {recovered}"
    async with await aio_pika.connect(publisher.url, timeout=10) as connection:
        channel = await connection.channel()
        await channel.queue_delete(source)
        await channel.queue_delete(target)
    return (
        f"{confirmed} confirmed, last expiry due {last_expiry:.1f}s after the kill, "
        f"target members list the killed node first: {killed_first}; {outcome}"
    )


@pytest.mark.broker
@needs_rabbitmq
@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    os.environ.get("AWTEST_MEASURE_DLX") != "1", reason="measurement: set AWTEST_MEASURE_DLX=1"
)
@pytest.mark.parametrize("layout", list(DLX_LAYOUTS))
@pytest.mark.parametrize("confirm_timeout_ms", [5000, 180000])
async def test_dlx_stall_after_leader_kill(confirm_timeout_ms: int, layout: str) -> None:
    """How long at-least-once dead-lettering stalls when node 1 dies.

    Source: a quorum queue with x-message-ttl 2 s, at-least-once dead-lettering to a
    quorum target queue through the default exchange, reject-publish; ``layout``
    says which nodes lead the two queues. A client on node 2 publishes one message
    every 50 ms for 6 s; node 1 is SIGKILLed 3 s in, while messages are expiring.
    Printed per trial: seconds from the kill until every confirmed message is in
    the target queue, or, past the wait, how long after node 1's restart. Trials:
    AWTEST_MEASURE_DLX_TRIALS (default 3), on one cluster per parameter set.
    """
    if _MODULE_CLUSTER_UP:
        pytest.skip("run alone (-k dlx_stall): it boots its own clusters")
    trials = int(os.environ.get("AWTEST_MEASURE_DLX_TRIALS", "3"))
    config = (
        f"[{{rabbit, [{{dead_letter_worker_publisher_confirm_timeout, {confirm_timeout_ms}}}]}}].\n"
    )
    with Cluster(advanced_config=config) as cluster:
        setting = cluster.ctl(
            "eval", "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout)."
        )
        assert setting.strip() == f"{{ok,{confirm_timeout_ms}}}"
        for trial in range(1, trials + 1):
            line = await _dlx_trial(cluster, layout, DLX_WAIT_S[confirm_timeout_ms])
            print(f"\nDLX {confirm_timeout_ms} ms, {layout}, trial {trial}: {line}", flush=True)
