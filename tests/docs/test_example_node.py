"""examples/node/publish.js: a job published from Node.js with amqplib runs on a Python worker.

Needs node and npm (and the npm registry, once, for amqplib). Without them the
tests are skipped with a reason that says the Node.js example went untested.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from amqp_worker import AMQPWorker, Job
from tests.conftest import SESSION_NAME, delete_topology_queues, example_env
from tests.harness.brokertools import BROKER_URL

pytestmark = pytest.mark.broker

NODE_DIR = Path(__file__).parents[2] / "examples" / "node"


@pytest.fixture(scope="module")
def node_example() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("SKIPPED: node/npm not installed: the Node.js publisher example is untested")
    if not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.skip(
                "SKIPPED: `npm ci` failed, so the Node.js publisher example is untested: "
                + result.stderr.strip()[-500:]
            )
    return NODE_DIR / "publish.js"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    prefix = f"awtest-node-{uuid.uuid4().hex[:8]}."
    yield prefix
    await delete_topology_queues("emails", prefix=prefix)


async def publish(script: Path, prefix: str, *args: str) -> tuple[int, str, str]:
    env = example_env(prefix)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class Digest(BaseModel):
    user_id: int
    items: int = 10


@pytest.mark.timeout(360)
async def test_a_job_from_node_runs_on_a_python_worker(node_example: Path, prefix: str) -> None:
    # Published before any worker ran: the script declares the queue, so it is kept.
    code, out, err = await publish(
        node_example, prefix, "emails", "send_digest", '{"user_id": 42, "items": 3}'
    )
    assert code == 0, err
    job_id = out.strip()

    worker = AMQPWorker(BROKER_URL, name=SESSION_NAME, queue_prefix=prefix, queues=["emails"])
    got: asyncio.Future[tuple[Digest, Job]] = asyncio.get_running_loop().create_future()

    async def send_digest(args: Digest, job: Job) -> None:
        got.set_result((args, job))

    worker.register("send_digest", send_digest)
    async with worker:
        args, job = await asyncio.wait_for(got, 20)
    assert args == Digest(user_id=42, items=3)  # validated into the handler's model
    assert job.id == job_id
    assert job.attempt == 0


@pytest.mark.timeout(360)
async def test_bad_args_fail_in_node_before_anything_is_sent(
    node_example: Path, prefix: str
) -> None:
    code, out, err = await publish(node_example, prefix, "emails", "send_digest", "[1, 2]")
    assert code == 1
    assert out == ""
    assert "args must be a JSON object" in err
