"""The AsyncAPI document: built from a worker, valid for the official parser, kept in docs/.

Validation runs @asyncapi/parser (npm, pinned in tests/asyncapi/package-lock.json)
with node, like the Node.js example. Without node or npm those tests are
skipped with a reason that says the document went unvalidated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from amqp_worker import AMQPWorker
from amqp_worker._rabbitmq.asyncapi import asyncapi_document

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "asyncapi"
DOC = ROOT / "docs" / "asyncapi.json"
EXAMPLE = "examples.daemon:worker"

pytestmark = pytest.mark.timeout(300)


def generate(*args: str) -> str:
    """``amqp-worker asyncapi`` as a subprocess, with no AMQP_WORKER_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMQP_WORKER_")}
    done = subprocess.run(
        [sys.executable, "-m", "amqp_worker.cli", "asyncapi", *args],
        cwd=ROOT,
        env={**env, "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def validate() -> Any:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("SKIPPED: node/npm not installed: the AsyncAPI document is unvalidated")
    if not (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=VALIDATOR,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if installed.returncode != 0:
            pytest.skip(
                "SKIPPED: `npm ci` of @asyncapi/parser failed, the AsyncAPI document is "
                "unvalidated: " + installed.stderr.strip()[-500:]
            )

    def run(path: Path) -> dict[str, Any]:
        done = subprocess.run(
            [node, str(VALIDATOR / "validate.mjs"), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        report: dict[str, Any] = json.loads(done.stdout)
        report["exit"] = done.returncode
        return report

    return run


def test_the_example_daemons_document_is_valid_asyncapi(validate: Any, tmp_path: Path) -> None:
    path = tmp_path / "asyncapi.json"
    path.write_text(generate(EXAMPLE))
    report = validate(path)
    errors = [d for d in report["diagnostics"] if d["severity"] == 0]
    assert errors == []
    assert report["valid"]
    assert report["exit"] == 0


def test_a_broken_document_is_caught_by_the_validator(validate: Any, tmp_path: Path) -> None:
    """The validator itself works: a channel reference to nowhere is an error."""
    document = json.loads(generate(EXAMPLE))
    operation = next(iter(document["operations"].values()))
    operation["channel"] = {"$ref": "#/channels/no-such-channel"}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    report = validate(path)
    assert not report["valid"]
    assert report["exit"] == 1


def test_docs_holds_the_current_document_of_the_example_daemon() -> None:
    current = generate(EXAMPLE)
    if os.environ.get("AMQP_WORKER_UPDATE_DOCS"):
        DOC.write_text(current)
    assert DOC.read_text() == current, (
        "docs/asyncapi.json is stale: regenerate it with "
        "`python -m amqp_worker.cli asyncapi examples.daemon:worker > docs/asyncapi.json`"
    )


class Welcome(BaseModel):
    """Sent once, after sign-up."""

    user_id: int
    name: str = "friend"


def test_the_document_has_a_channel_per_queue_a_message_per_handler_and_the_bindings() -> None:
    worker = AMQPWorker(
        "amqp://app:Zq9-secret@rabbit.internal:5671/prod",
        name="shop",
        queues=["emails", "reports"],
        queue_prefix="p.",
    )

    @worker.handler("welcome")
    async def welcome(args: Welcome) -> None:
        """Send the welcome email."""

    @worker.handler("anything")
    def anything(args: dict[str, Any]) -> None: ...

    document = asyncapi_document(worker.settings, worker.handler_specs)
    text = json.dumps(document)
    assert "Zq9-secret" not in text
    assert "app" not in document["servers"]["rabbitmq"]["host"]
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["rabbitmq"]["pathname"] == "/prod"
    assert set(document["channels"]) == {"emails", "emails.delayed", "reports", "reports.delayed"}
    emails = document["channels"]["emails"]
    assert emails["address"] == "emails"
    exchange = emails["bindings"]["amqp"]["exchange"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) == ("shop", "direct", True)
    assert "`p.emails`" in emails["description"]
    assert document["channels"]["emails.delayed"]["bindings"]["amqp"]["exchange"]["name"] == (
        "shop.due"
    )
    assert set(emails["messages"]) == {"welcome", "anything"}
    messages = document["components"]["messages"]
    welcome_payload = messages["welcome"]["payload"]["allOf"]
    assert welcome_payload[0] == {"$ref": "#/components/schemas/Job"}
    assert welcome_payload[1]["properties"]["handler"] == {"const": "welcome"}
    assert welcome_payload[1]["properties"]["args"] == {"$ref": "#/components/schemas/Welcome"}
    assert messages["welcome"]["summary"] == "Send the welcome email."
    schemas = document["components"]["schemas"]
    assert schemas["Welcome"]["required"] == ["user_id"]
    assert "handler" in schemas["Job"]["properties"]
    anything_args = messages["anything"]["payload"]["allOf"][1]["properties"]["args"]
    assert anything_args["type"] == "object"
    send = document["operations"]["perform.emails"]
    assert send["action"] == "send"
    assert send["bindings"]["amqp"]["deliveryMode"] == 2
    assert document["operations"]["run.emails"]["bindings"]["amqp"]["ack"] is True


def test_a_simple_worker_has_no_amqp_document() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amqp_worker.cli", "asyncapi", "tests.cli.app:simple"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "AMQPWorker" in done.stderr
