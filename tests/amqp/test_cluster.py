"""A three-node RabbitMQ cluster loses a node under load: every confirmed job still runs.

The cluster is private (tests/harness/cluster.py: three nodes on other ports, one
scheduler each, dead_letter_worker_publisher_confirm_timeout=5000 ms); the
shared broker is never touched. Workers are real processes
(tests/amqp/cluster_worker.py) given the comma-separated URL list, on quorum
queues. Jobs are counted by id.

The default run is short enough for every CI run. ``AMQP_WORKER_CLUSTER_FULL=1``
runs the issue's full size: 5,000 immediate jobs and 500 delayed 2-20 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from amqp_worker import AMQPWorker, BrokerError, FailureReason, Job
from tests.amqp.cluster_worker import PREFETCH
from tests.harness.cluster import Cluster, rabbitmq_available

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

ROOT = Path(__file__).parent.parent.parent
FULL = os.environ.get("AMQP_WORKER_CLUSTER_FULL") == "1"
IMMEDIATE = 5000 if FULL else 1000
DELAYED = IMMEDIATE // 10
MAX_DELAY_S = 20 if FULL else 8
FLAKY = 20
WORKERS = 2
PUBLISHERS = 8
QUEUE = "jobs"
RESUME_BOUND_S = 15.0
GUARD_S = 180.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root to start private nodes")
    with Cluster() as started:
        yield started


def runs(out: Path) -> list[tuple[float, str]]:
    """(time, job id) of every run recorded in ``out``'s worker files."""
    found: list[tuple[float, str]] = []
    for path in out.glob("worker-*.log"):
        for line in path.read_text().splitlines():
            at, job_id = line.split()
            found.append((float(at), job_id))
    return found


def worker_runs(path: Path) -> list[float]:
    return (
        [float(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []
    )


async def wait_for(check: object, what: str, timeout_s: float = GUARD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_node_dies_under_load_and_every_confirmed_job_runs(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"awc-{uuid.uuid4().hex[:8]}"
    # The publisher dials node 1 (the list in its given order), declares the queues,
    # so their quorum leaders are on node 1: that is the node that dies.
    monkeypatch.setattr(random, "shuffle", lambda items: None)
    publisher = AMQPWorker(
        cluster.url_list,
        name=name,
        queues=[QUEUE],
        queue_type="quorum",
        reconnect_interval_s=0.5,
        heartbeat_s=5,
        publish_timeout_s=20,
    )
    procs: list[asyncio.subprocess.Process] = []
    logs = contextlib.ExitStack()
    confirmed: set[str] = set()
    delayed: set[str] = set()  # go through dead-letter hops: see docs/cluster.md
    refused: list[BaseException] = []
    try:
        await publisher.perform(Job(handler="run", queue=QUEUE))  # declares work queue
        warm = publisher.perform_in(Job(handler="run", queue=QUEUE), 0.1)
        confirmed.add(await warm)  # declares the due queue and delay topology
        leader = cluster.leader_of(publisher.topology.work_queue(QUEUE))
        assert leader is cluster.nodes[0], "the work queue's leader should be on node 1"

        for n in range(WORKERS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.amqp.cluster_worker",
                    cluster.url_list,
                    name,
                    QUEUE,
                    str(tmp_path / f"worker-{n}.log"),
                    "given" if n == 0 else "shuffled",  # worker 0 is on node 1: it is cut off
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    stderr=logs.enter_context(open(tmp_path / f"worker-{n}.err", "wb")),  # noqa: ASYNC230, SIM115
                )
            )

        jobs = [Job(handler="run", queue=QUEUE, args={"n": n}) for n in range(IMMEDIATE)]
        for start in range(0, IMMEDIATE, 500):
            confirmed.update(await publisher.perform_many(jobs[start : start + 500]))
        for _ in range(DELAYED):
            delay_s = random.uniform(2, MAX_DELAY_S)
            delayed.add(await publisher.perform_in(Job(handler="run", queue=QUEUE), delay_s))
        for _ in range(FLAKY):  # their retries wait in the delay queues across the kill
            delayed.add(await publisher.perform(Job(handler="flaky", queue=QUEUE)))
        confirmed |= delayed

        # Publishers keep going while the node dies: each call returns or raises.
        stop_publishing = asyncio.Event()
        published_at: list[tuple[float, str]] = []

        async def keep_publishing() -> None:
            while not stop_publishing.is_set():
                job = Job(handler="run", queue=QUEUE)
                try:
                    await publisher.perform(job)
                except BrokerError as exc:
                    refused.append(exc)
                else:
                    confirmed.add(job.id)
                    published_at.append((time.time(), job.id))
                await asyncio.sleep(0.01)

        pumps = [asyncio.ensure_future(keep_publishing()) for _ in range(PUBLISHERS)]
        await wait_for(lambda: len(runs(tmp_path)) >= IMMEDIATE // 3, "a third of the jobs to run")
        # Jobs run while start() still declares the delay topology; a node lost before it is
        # done fails start() (with the publisher's faster perform_many, it was).
        await wait_for(
            lambda: all((tmp_path / f"worker-{n}.log.started").exists() for n in range(WORKERS)),
            "the workers to finish starting",
        )

        await asyncio.to_thread(cluster.kill, leader)
        killed_at = time.time()  # its VM is gone: anything after this ran elsewhere
        await wait_for(
            lambda: any(at > killed_at for at, _ in published_at), "publishing to resume", 60
        )
        publish_resumed_s = min(at for at, _ in published_at if at > killed_at) - killed_at
        await asyncio.sleep(3)
        stop_publishing.set()
        await asyncio.gather(*pumps)

        # Immediate jobs need no dead-letter hop: every one runs while the node is down.
        await wait_for(
            lambda: confirmed - delayed <= {job_id for _, job_id in runs(tmp_path)},
            "every confirmed immediate job",
        )
        delayed_during_outage = len(delayed & {job_id for _, job_id in runs(tmp_path)})
        for proc in procs:
            assert proc.returncode is None, "a worker process died"

        # The node comes back and rejoins; the workers need no restart. A quorum
        # queue's dead-letter worker may wait for it (both leaders of a hop were on it):
        # every delayed job and retry scheduled before the kill runs now at the latest.
        restarted_at = time.time()
        await asyncio.to_thread(cluster.restart, leader)
        assert {node.node_name for node in cluster.nodes} <= cluster.running_nodes()
        await wait_for(
            lambda: confirmed <= {job_id for _, job_id in runs(tmp_path)}, "every confirmed job"
        )
        all_ran_s = max(at for at, _ in runs(tmp_path)) - restarted_at
        ran = Counter(job_id for _, job_id in runs(tmp_path))
        duplicates = sum(count - 1 for count in ran.values())
        started_on = [
            next(
                line.split("worker started: ")[1].split()[0]
                for line in (tmp_path / f"worker-{n}.err").read_text().splitlines()
                if "worker started: " in line
            )
            for n in range(WORKERS)
        ]
        assert started_on[0].endswith(f":{leader.port}"), started_on
        reconnected = "reconnected to" in (tmp_path / "worker-0.err").read_text()
        resumed_s = []
        for n in range(WORKERS):
            after = [at for at in worker_runs(tmp_path / f"worker-{n}.log") if at > killed_at]
            assert after, f"worker {n} never ran a job after the kill"
            resumed_s.append(min(after) - killed_at)
        with capsys.disabled():
            print(
                f"\ncluster node loss: {len(confirmed)} confirmed, {len(ran)} ran, "
                f"{duplicates} duplicate runs, {len(refused)} performs raised "
                f"{dict(Counter(type(e).__name__ for e in refused))}; workers "
                f"resumed {', '.join(f'{s:.1f}' for s in resumed_s)} s after the kill, "
                f"publishing {publish_resumed_s:.1f} s after; workers were on {started_on}, "
                f"killed node port {leader.port}; {delayed_during_outage} of {len(delayed)} "
                f"delayed jobs and retries ran during the outage, the rest by "
                f"{all_ran_s:.1f} s after the restart; cluster boot "
                f"{cluster.boot_seconds:.1f} s"
            )
        # Nothing confirmed was lost; duplicates stay within what the cut connections
        # held unacked (each worker's prefetch) plus publishes in flight at the cut.
        assert confirmed <= set(ran)
        assert duplicates <= WORKERS * PREFETCH + PUBLISHERS
        assert max(resumed_s) <= RESUME_BOUND_S
        assert reconnected, "worker 0 never logged its failover"
        assert publish_resumed_s <= RESUME_BOUND_S

        late = [Job(handler="run", queue=QUEUE, args={"late": n}) for n in range(50)]
        confirmed.update(await publisher.perform_many(late))
        await wait_for(
            lambda: {job.id for job in late} <= {job_id for _, job_id in runs(tmp_path)},
            "jobs published after the node came back",
        )
        assert await publisher.failed.list() == []
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        logs.close()
        await publisher.stop(timeout_s=0)


async def test_a_crash_loop_ends_in_the_failed_queue_on_the_cluster(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = f"awc-crash-{uuid.uuid4().hex[:8]}"
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    publisher = AMQPWorker(cluster.url_list, name=name, queues=[queue], queue_type="quorum")
    poison = Job(handler="poison", queue=queue)
    innocents = [Job(handler="innocent", queue=queue, args={"n": n}) for n in range(6)]
    try:
        await publisher.perform(poison)
        await publisher.perform_many(innocents)
        deaths = 0
        for _ in range(6):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.amqp.crash_worker",
                cluster.url_list,
                name,
                queue,
                "quorum",
                "3",
                str(tmp_path),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            try:
                await asyncio.wait_for(proc.wait(), 12)
                deaths += 1
            except TimeoutError:
                break  # it lived: nothing left to crash it
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        [parked] = await publisher.failed.list()
        assert parked.id == poison.id
        assert parked.reason is FailureReason.CRASHED
        assert deaths == 3
        assert sorted(os.listdir(tmp_path)) == sorted(job.id for job in innocents)
    finally:
        await publisher.stop(timeout_s=0)


def test_the_daemon_carries_on_when_its_node_stops(cluster: Cluster, tmp_path: Path) -> None:
    """The README's recipe: the URL list in AMQP_WORKER_URL, `amqp-worker run`, stop a node."""
    env = {
        **os.environ,
        "AMQP_WORKER_URL": cluster.url_list,
        "AMQP_WORKER_QUEUE_TYPE": "quorum",
        "AMQP_WORKER_NAME": f"awc-cli-{uuid.uuid4().hex[:8]}",
        "AMQP_WORKER_HEARTBEAT_S": "5",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "amqp_worker.cli"]
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(
            [*command, "run", "examples.daemon:worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:

        def wait_for_log(text: str, timeout_s: float = 60) -> str:
            deadline = time.monotonic() + timeout_s
            while text not in (content := log_path.read_text()):
                assert daemon.poll() is None, f"the daemon exited:\n{content}"
                assert time.monotonic() < deadline, f"no {text!r} in:\n{content}"
                time.sleep(0.1)
            return content

        started = wait_for_log("worker started: ")
        node = started.split("worker started: ")[1].split()[0]
        victim = next(n for n in cluster.nodes if node.endswith(f":{n.port}"))
        cluster.stop(victim)
        wait_for_log("reconnecting to the next node")
        wait_for_log("reconnected to ")
        subprocess.run(
            [*command, "enqueue", "-q", "emails", "-H", "send_email", "--args", '{"user_id": 7}'],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        log = wait_for_log("sent email to user 7")
        assert "guest:guest" not in log
    finally:
        daemon.terminate()
        daemon.wait(30)
        for stopped in [n for n in cluster.nodes if not n.is_running()]:
            cluster.restart(stopped)  # the module's cluster is whole again
