"""amqps:// on a private RabbitMQ node with a TLS listener and a throwaway CA.

Certificates are made with the ``openssl`` command; the node is started by
this module (tests/harness/broker_node.py), never the shared broker.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from amqp_worker import AMQPWorker, BrokerUnavailable, ConfigurationError, Job
from tests.harness.broker_node import (
    NODE_BASE_DIR,
    BrokerNode,
    free_ports,
    node_path,
    rabbitmq_available,
)

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """A CA, and a server certificate for localhost and 127.0.0.1 signed by it."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=amqp-worker test CA",
        cwd=directory,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
        cwd=directory,
    )  # fmt: skip
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the rabbitmq user reads them


@dataclass
class TLSNode:
    node: BrokerNode
    port: int
    ca: Path

    def url(self, query: str = "") -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.port}/{query}"


@pytest.fixture(scope="module")
def tls() -> Iterator[TLSNode]:
    if not rabbitmq_available() or shutil.which("openssl") is None:
        pytest.skip("needs rabbitmq-server, openssl and root to start a private TLS node")
    with tempfile.TemporaryDirectory(prefix="awtest-tls-", dir=NODE_BASE_DIR) as name:
        certs = Path(name)
        certs.chmod(0o755)
        make_certificates(certs)
        (port,) = free_ports(1)
        config = (
            f"listeners.ssl.default = 127.0.0.1:{port}\n"
            f"ssl_options.cacertfile = {node_path(certs / 'ca.pem')}\n"
            f"ssl_options.certfile = {node_path(certs / 'server.pem')}\n"
            f"ssl_options.keyfile = {node_path(certs / 'server.key')}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )
        with BrokerNode(extra_config=config) as node:
            yield TLSNode(node, port, certs / "ca.pem")


async def round_trip(worker: AMQPWorker) -> dict[str, Any]:
    queue = worker.settings.queues[0]
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def h(args: dict[str, Any]) -> None:
        if not got.done():
            got.set_result(args)

    worker.register("h", h)
    async with worker:
        await worker.perform(Job(handler="h", queue=queue, args={"over": "tls"}))
        return await asyncio.wait_for(got, 20)


async def test_amqps_with_an_ssl_context(tls: TLSNode) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca))
    worker = AMQPWorker(
        tls.url(), ssl_context=context, name="awtest-tls", queues=[f"q.{uuid.uuid4().hex[:8]}"]
    )
    assert await round_trip(worker) == {"over": "tls"}


async def test_amqps_with_tls_options_in_the_url(tls: TLSNode) -> None:
    worker = AMQPWorker(
        tls.url(f"?cafile={quote(str(tls.ca))}"),
        name="awtest-tls",
        queues=[f"q.{uuid.uuid4().hex[:8]}"],
    )
    assert await round_trip(worker) == {"over": "tls"}


@pytest.mark.timeout(30)
async def test_an_untrusted_certificate_is_a_clear_error_without_credentials(
    tls: TLSNode,
) -> None:
    worker = AMQPWorker(tls.url(), publish_timeout_s=60)  # not retried: fails at once
    with pytest.raises(BrokerUnavailable, match="certificate failed verification") as info:
        await worker.perform(Job(handler="h"))
    assert "guest:guest" not in str(info.value)
    await worker.stop()


def test_an_ssl_context_needs_amqps(tls: TLSNode) -> None:
    with pytest.raises(ConfigurationError, match="amqps://"):
        AMQPWorker(tls.node.url, ssl_context=ssl.create_default_context())
