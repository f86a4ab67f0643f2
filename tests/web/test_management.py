"""The dashboard with RabbitMQ's management API, against a real management plugin.

The shared test broker has no management plugin (and must not get one), so this
module boots one private node with it (``BrokerNode(management=True)``, about 5 s)
and shares it between its tests; each test uses worker names and job queues of its
own. The node collects statistics every second, so what the API reports catches up
within a second or two: tests poll it, with a deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pydantic import SecretStr

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.dashboard import Dashboard, DashboardSettings
from amqp_worker.dashboard.management import ConsumerInfo, ManagementAPI, ManagementUnavailable
from tests.harness.broker_node import BrokerNode, free_ports, rabbitmq_available

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

#: Longest a test waits for the management API's statistics to show a change.
GUARD_S = 30.0

GUEST = ("guest", "guest")

#: ManagementAPI.consumers() reads ``channel_details.connection_name``, which is the
#: broker's name for the connection ("127.0.0.1:50000 -> 127.0.0.1:5672"); the name a
#: client gives (``connection_name``) is the connection's ``user_provided_name``.


@dataclass(frozen=True)
class Node:
    """The private node, and two users of its own with passwords no other test uses."""

    broker: BrokerNode
    amqp_user: str
    amqp_password: str
    management_user: str
    management_password: str

    @property
    def amqp_url(self) -> str:
        """AMQP URL of the application user (all permissions on ``/``, no tags)."""
        return f"amqp://{self.amqp_user}:{self.amqp_password}@127.0.0.1:{self.broker.port}/"

    def management_url(self, password: str | None = None) -> str:
        """Management URL of the monitoring user (tag ``monitoring``, may change nothing)."""
        secret = self.management_password if password is None else password
        return f"http://{self.management_user}:{secret}@127.0.0.1:{self.broker.management_port}/"


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    if not rabbitmq_available():
        pytest.skip("needs rabbitmq-server installed and root to start a private node")
    suffix = uuid.uuid4().hex[:12]
    with BrokerNode(management=True) as broker:
        found = Node(
            broker,
            amqp_user=f"app-{suffix}",
            amqp_password=f"amqp-secret-{uuid.uuid4().hex}",
            management_user=f"mon-{suffix}",
            management_password=f"mgmt-secret-{uuid.uuid4().hex}",
        )
        # Each rabbitmqctl call takes about a second: the two users are made side by side.
        app = [
            ("add_user", found.amqp_user, found.amqp_password),
            ("set_permissions", "-p", "/", found.amqp_user, ".*", ".*", ".*"),
        ]
        monitor = [
            ("add_user", found.management_user, found.management_password),
            # Access to the vhost (to list its queues and consumers), permission for nothing.
            ("set_permissions", "-p", "/", found.management_user, "^$", "^$", "^$"),
            ("set_user_tags", found.management_user, "monitoring"),
        ]
        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(run_all, broker, calls) for calls in (app, monitor)]:
                done.result()
        try:
            yield found
        finally:
            # Nothing on it is worth a graceful stop (about 6 s with the plugin).
            if broker.is_running():
                broker.kill(flush_metadata=False)


def run_all(broker: BrokerNode, calls: list[tuple[str, ...]]) -> None:
    for args in calls:
        broker.ctl(*args)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after :data:`GUARD_S`."""
    deadline = asyncio.get_running_loop().time() + GUARD_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
async def api(node: Node) -> AsyncIterator[ManagementAPI]:
    client = ManagementAPI(node.broker.management_url, "/", fallback=GUEST)
    try:
        yield client
    finally:
        await client.aclose()


# -- ManagementAPI ---------------------------------------------------------------


async def test_queues_report_ready_unacked_and_consumers(node: Node, api: ManagementAPI) -> None:
    queue_name = unique("mgmt.raw")
    connection = await aio_pika.connect(node.broker.url, timeout=10)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        await publisher.declare_queue(queue_name, durable=True)
        for number in range(5):
            await publisher.default_exchange.publish(
                aio_pika.Message(f"m{number}".encode()), routing_key=queue_name
            )
        # A consumer that takes two deliveries (its prefetch) and never acks them.
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=2)
        held: list[AbstractIncomingMessage] = []

        async def hold(message: AbstractIncomingMessage) -> None:
            held.append(message)

        await (await consumer.get_queue(queue_name)).consume(hold)

        async def counted() -> bool:
            info = (await api.queues()).get(queue_name)
            return info is not None and (info.ready, info.unacked, info.consumers) == (3, 2, 1)

        await eventually(counted, f"{queue_name}: 3 ready, 2 unacked, 1 consumer")
        assert len(held) == 2
    finally:
        await connection.close()


class Running:
    """An AMQPWorker on the private node, with job queues and a connection name of its own."""

    def __init__(self, url: str, **options: Any) -> None:
        self.connection_name = unique("worker-conn")
        self.queues = sorted(unique(prefix) for prefix in ("emails", "reports"))
        self.worker = AMQPWorker(
            url,
            name=unique("mgmt"),
            queues=self.queues,
            connection_name=self.connection_name,
            **options,
        )

    async def consumers(self, api: ManagementAPI) -> list[ConsumerInfo]:
        """The consumers of this worker's work queues, once the API shows them all."""
        mine: list[ConsumerInfo] = []

        async def shown() -> bool:
            mine[:] = [c for c in await api.consumers() if c.queue in self.queues]
            # A new consumer is listed before its channel details (connection, peer) are.
            complete = all(c.connection and c.peer != "?:?" for c in mine)
            return complete and sorted(c.queue for c in mine) == self.queues

        await eventually(shown, f"consumers of {self.queues}")
        return mine


@pytest.fixture
async def running(node: Node) -> AsyncIterator[Running]:
    started = Running(node.broker.url, max_concurrency=3)
    await started.worker.start()
    try:
        yield started
    finally:
        await started.worker.stop(timeout_s=5)


async def test_bound_queues_are_the_job_queues_of_a_started_worker(
    running: Running, api: ManagementAPI
) -> None:
    exchange = running.worker.settings.topology.exchange
    assert await api.bound_queues(exchange) == running.queues
    assert await api.bound_queues(unique("no-such-exchange")) == []


async def test_consumers_show_the_workers_queues_peer_and_prefetch(
    running: Running, api: ManagementAPI
) -> None:
    mine = await running.consumers(api)
    assert len(mine) == 2
    # The work channel's prefetch: 2 x max_concurrency.
    assert {c.prefetch for c in mine} == {6}
    assert all(c.peer.startswith("127.0.0.1:") for c in mine), mine
    assert all(c.active and c.tag for c in mine), mine
    # All consumers come from the worker's one connection.
    assert len({c.connection for c in mine}) == 1, mine
    # The due and quarantine queues have their consumers too.
    topology = running.worker.settings.topology
    everyone = {c.queue for c in await api.consumers()}
    for queue in running.queues:
        assert {topology.due_queue(queue), topology.quarantine_queue(queue)} <= everyone


async def test_consumers_name_the_workers_connection(running: Running, api: ManagementAPI) -> None:
    mine = await running.consumers(api)
    assert {c.connection for c in mine} == {running.connection_name}


@pytest.mark.parametrize("where", ["url", "fallback"])
async def test_wrong_credentials_are_unavailable_without_the_password(
    node: Node, where: str
) -> None:
    password = f"wrong-{uuid.uuid4().hex}"
    if where == "url":
        api = ManagementAPI(node.management_url(password), "/")
    else:
        api = ManagementAPI(
            node.broker.management_url, "/", fallback=(node.management_user, password)
        )
    try:
        for call in (api.queues, api.consumers):
            with pytest.raises(ManagementUnavailable) as raised:
                await call()
            assert "HTTP 401" in str(raised.value)
            assert password not in str(raised.value)
            assert password not in repr(raised.value)
        assert password not in repr(api)
    finally:
        await api.aclose()


async def test_an_unreachable_port_is_unavailable(node: Node) -> None:
    (closed,) = free_ports(1)  # bound a moment ago, by nobody now
    api = ManagementAPI(f"http://127.0.0.1:{closed}/", "/", fallback=GUEST)
    try:
        with pytest.raises(ManagementUnavailable, match=str(closed)):
            await api.queues()
    finally:
        await api.aclose()


# -- the dashboard with the management API ------------------------------------------


class Served:
    """A Dashboard of worker ``name`` (told only of ``queues``), and an HTTP client of it."""

    def __init__(self, amqp_url: str, name: str, queues: list[str], management_url: str) -> None:
        settings = AMQPSettings.from_url(amqp_url, name=name, queues=queues)
        options = DashboardSettings(management_url=SecretStr(management_url))
        self.dashboard = Dashboard(settings, options)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.dashboard), base_url="http://testserver"
        )

    async def overview(self) -> dict[str, Any]:
        response = await self.client.get("/api/overview")
        assert response.status_code == 200, response.text[:500]
        data: dict[str, Any] = response.json()
        return data

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.dashboard.aclose()


class Blocker:
    """A handler that holds each job until released, counting the jobs it is running."""

    def __init__(self) -> None:
        self.running = 0
        self.release = asyncio.Event()

    async def __call__(self, args: dict[str, Any]) -> None:
        self.running += 1
        try:
            await self.release.wait()
        finally:
            self.running -= 1


@dataclass
class Busy:
    """A worker running two blocked jobs of ``jobs`` with three more waiting, and its dashboard."""

    worker: AMQPWorker
    blocker: Blocker
    served: Served
    jobs: str
    hidden: str
    connection_name: str


@pytest.fixture
async def busy(node: Node) -> AsyncIterator[Busy]:
    name = unique("mgmt-dash")
    jobs, hidden = unique("jobs"), unique("hidden")
    connection_name = unique("dash-worker")
    blocker = Blocker()
    # prefetch == max_concurrency: every unacked delivery is a running job.
    worker = AMQPWorker(
        node.amqp_url,
        name=name,
        queues=[jobs, hidden],
        connection_name=connection_name,
        max_concurrency=2,
        prefetch=2,
    )
    worker.register("block", blocker)
    # The dashboard is told of `jobs` only; `hidden` is found through its binding.
    served = Served(node.amqp_url, name, [jobs], node.management_url())
    try:
        await worker.start()
        await worker.perform_many([Job(handler="block", queue=jobs) for _ in range(5)])

        async def two_running() -> bool:
            return blocker.running == 2

        await eventually(two_running, "two jobs running")
        yield Busy(worker, blocker, served, jobs, hidden, connection_name)
    finally:
        blocker.release.set()
        await worker.stop(timeout_s=10)
        await served.aclose()
    assert blocker.running == 0


async def test_overview_counts_jobs_in_progress_and_finds_bound_queues(busy: Busy) -> None:
    rows: dict[str, dict[str, Any]] = {}

    async def caught_up() -> bool:
        data = await busy.served.overview()
        assert data["management"] is True, data["notes"]
        rows.clear()
        rows.update({row["queue"]: row for row in data["rows"]})
        row = rows.get(busy.jobs)
        # All three from one look: the management API's figures do not move together.
        return row is not None and (row["in_progress"], row["ready"], row["consumers"]) == (2, 3, 1)

    await eventually(caught_up, "the overview to show 2 jobs in progress, 3 ready, 1 consumer")
    assert busy.blocker.running == 2
    assert rows[busy.jobs]["due"] == 0
    assert rows[busy.jobs]["failed"] == 0
    # Never named to the dashboard: discovered through its binding on the exchange.
    assert set(rows) == {busy.jobs, busy.hidden}
    assert rows[busy.hidden]["ready"] == 0
    assert rows[busy.hidden]["in_progress"] == 0
    assert rows[busy.hidden]["consumers"] == 1


async def test_workers_page_lists_the_consumers(busy: Busy) -> None:
    async def listed() -> bool:
        page = await busy.served.client.get("/workers")
        assert page.status_code == 200
        assert "did not answer" not in page.text
        # A consumer row, not the counts table above it.
        return f'<td class="mono">{busy.jobs}</td>' in page.text

    await eventually(listed, f"/workers to list the consumer of {busy.jobs}")
    page = (await busy.served.client.get("/workers")).text
    assert f'<td class="mono">{busy.hidden}</td>' in page
    assert '<td class="mono">127.0.0.1:' in page  # the peer


async def test_workers_page_shows_the_connection_name(busy: Busy) -> None:
    # The consumers table (not the counts above it) names the queue and the connection;
    # the management API lists a consumer about a second after it starts.
    row = f'<td class="mono">{busy.jobs}</td><td>{busy.connection_name}</td>'

    async def listed() -> bool:
        page = await busy.served.client.get("/workers")
        return row in page.text

    await eventually(listed, f"/workers to list the consumer of {busy.jobs} by its name")


PAGES = ["/", "/api/overview", "/workers", "/failed", "/schedules", "/delayed"]


async def test_no_page_holds_a_password(node: Node) -> None:
    name = unique("mgmt-secret")
    jobs = unique("jobs")
    worker = AMQPWorker(node.amqp_url, name=name, queues=[jobs], connection_name=name)
    wrong = f"wrong-{uuid.uuid4().hex}"
    served = Served(node.amqp_url, name, [jobs], node.management_url())
    refused = Served(node.amqp_url, name, [jobs], node.management_url(wrong))
    secrets = [node.amqp_password, node.management_password, wrong]
    try:
        await worker.start()
        assert (await served.overview())["management"] is True
        for path in [*PAGES, f"/delayed?queue={jobs}"]:
            for dashboard in (served, refused):
                response = await dashboard.client.get(path)
                assert response.status_code == 200, (path, response.text[:500])
                for secret in secrets:
                    assert secret not in response.text, f"{path} shows a password"
                    assert secret not in str(response.headers), f"{path} sends a password"

        # The refused dashboard says why it shows less, still without the password.
        data = await refused.overview()
        assert data["management"] is False
        assert any("HTTP 401" in note for note in data["notes"]), data["notes"]
        assert "did not answer" in (await refused.client.get("/workers")).text
    finally:
        await worker.stop(timeout_s=5)
        await served.aclose()
        await refused.aclose()
