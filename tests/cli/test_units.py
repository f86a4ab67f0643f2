"""The CLI's pieces, in process: durations, tables, secrets, targets, JSON logs, health, rebuilding."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys

import click
import pytest

from amqp_worker import AMQPWorker, RetryPolicy, SimpleWorker
from amqp_worker.cli import cli
from amqp_worker.cli.common import DEFAULT_TIMEOUT_S, Secrets, Target, render_table, shorten
from amqp_worker.cli.daemon import Daemon
from amqp_worker.cli.enqueue import parse_duration, parse_time
from amqp_worker.cli.health import respond, start_health_server
from amqp_worker.cli.loading import rebuilt
from amqp_worker.cli.logs import JsonFormatter


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5),
        ("2m", 120),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("90", 90),
        (" 2M ", 120),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "-5s", "5s5", "1h 30m", "inf", "nan", "-1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_times_need_an_offset() -> None:
    assert parse_time("2030-01-01T09:00:00Z").utcoffset() is not None
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_time("2030-01-01T09:00:00")


def test_table_pads_columns() -> None:
    assert render_table(("A", "BB"), [("xxx", 1), ("y", 22)]) == "A    BB\nxxx  1\ny    22"


def test_shorten() -> None:
    assert shorten("a\n  b", 10) == "a b"
    assert shorten("x" * 20, 10) == "xxxxxxx..."


def test_secrets_scrub_what_they_were_given() -> None:
    secrets = Secrets.given(
        ["check", "--url=amqps://bob:hunter22@rabbit/vh", "amqp://x:s3cret pw@h/"],
        {"AMQP_WORKER_URL": "amqp://u:env-pw-1@h/", "OTHER": "amqp://u:not-ours@h/"},
    )
    assert secrets.scrub("see amqp://user:pw@host/") == "see amqp://***@host/"
    assert secrets.scrub("hunter22, s3cret pw, env-pw-1") == "***, ***, ***"
    assert secrets.scrub("not-ours") == "not-ours"  # only AMQP_WORKER_URL is a URL of ours
    secrets.add("amqp://u:added-pw@h/")
    assert secrets.scrub("added-pw") == "***"


def test_secrets_are_per_run_not_global() -> None:
    Secrets(["amqp://u:hunter22@h/"])
    assert Secrets().scrub("hunter22") == "hunter22"


def test_target_learns_the_url_of_each_worker_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_WORKER_URL", "amqp://u:env-pw-2@h/")
    target = Target(None, None, None)
    target.worker()
    assert target.secrets.scrub("env-pw-2") == "***"


def test_target_timeout_is_the_publish_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_WORKER_PUBLISH_TIMEOUT_S", "60")  # the daemon's; not used here
    assert Target(None, None, None, 2.5).worker().settings.publish_timeout_s == 2.5
    assert Target(None, None, None, 2.5).settings(["a"]).publish_timeout_s == 2.5
    assert Target(None, None, None).settings().publish_timeout_s == 60


def _commands(group: click.Group, path: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= _commands(command, f"{path}{name} ")
        else:
            found[f"{path}{name}"] = command
    return found


def test_every_one_shot_command_has_a_short_timeout() -> None:
    commands = _commands(cli)
    assert {"check", "enqueue", "queues", "failed list", "failed purge"} <= set(commands)
    for path, command in commands.items():
        timeouts = [param for param in command.params if param.name == "timeout"]
        # run and its children (_child): a daemon retries for publish_timeout_s;
        # asyncapi connects to nothing; limits connects with the named worker's settings.
        if path in ("run", "_child", "asyncapi", "limits"):
            assert not timeouts
        else:
            assert [param.default for param in timeouts] == [DEFAULT_TIMEOUT_S], path


def test_json_formatter_adds_the_job_fields() -> None:
    record = logging.LogRecord(
        "amqp_worker", logging.ERROR, __file__, 1, "job %s failed", ("j1",), None
    )
    record.job_id = "j1"
    record.handler = "h"
    record.queue = "q"
    record.attempt = 0
    record.outcome = "parked"
    record.duration_s = 0.25
    record.reason = None  # None is left out
    line = json.loads(JsonFormatter().format(record))
    assert line["duration_s"] == 0.25
    assert "reason" not in line
    assert line["message"] == "job j1 failed"
    assert line["level"] == "ERROR"
    assert line["logger"] == "amqp_worker"
    assert {k: line[k] for k in ("job_id", "handler", "queue", "attempt", "outcome")} == {
        "job_id": "j1",
        "handler": "h",
        "queue": "q",
        "attempt": 0,
        "outcome": "parked",
    }
    assert line["timestamp"].endswith("+00:00")
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", (), None)
    assert set(json.loads(JsonFormatter().format(plain))) == {
        "timestamp",
        "level",
        "logger",
        "message",
    }


def test_json_formatter_keeps_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), exc_info)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["traceback"]


@pytest.mark.parametrize(
    ("request_line", "healthy", "status"),
    [
        ("GET /healthz HTTP/1.1", True, 200),
        ("GET /healthz?verbose=1 HTTP/1.0", True, 200),
        ("GET /healthz HTTP/1.1", False, 503),
        ("HEAD /healthz HTTP/1.1", False, 503),
        ("POST /healthz HTTP/1.1", True, 405),
        ("GET / HTTP/1.1", True, 404),
        ("garbage", True, 400),
    ],
)
def test_health_responses(request_line: str, healthy: bool, status: int) -> None:
    response = respond(request_line, lambda: healthy)
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    if request_line.startswith("HEAD"):
        assert response.endswith(b"\r\n\r\n")


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


async def test_health_server_answers_503_until_the_worker_runs() -> None:
    daemon = Daemon(SimpleWorker(), shutdown_timeout_s=1)
    server = await start_health_server("127.0.0.1", 0, daemon.healthy)
    port = server.sockets[0].getsockname()[1]
    try:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        assert (await _get(port, request)).startswith(b"HTTP/1.1 503 ")
        daemon.running = True
        response = await _get(port, request)
        assert response.startswith(b"HTTP/1.1 200 ")
        assert response.endswith(b"\r\n\r\nok\n")
        assert (await _get(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    finally:
        server.close()
        await server.wait_closed()


def test_an_amqp_worker_is_unhealthy_without_a_connection() -> None:
    daemon = Daemon(AMQPWorker("amqp://127.0.0.1:1/"), shutdown_timeout_s=1)
    daemon.running = True
    assert not daemon.healthy()


def test_rebuilt_keeps_handlers_hooks_retry_and_timeout() -> None:
    policy = RetryPolicy(max_retries=7)
    worker = AMQPWorker("amqp://guest:pw@rabbit/", queues=["a"], retry=policy, timeout_s=3)

    @worker.handler("h")
    def handler(args: dict[str, object]) -> None: ...

    @worker.hooks.on_parked
    def hook(event: object) -> None: ...

    fresh = rebuilt(worker, queues=["b"], max_concurrency=4, prefetch=9)
    assert isinstance(fresh, AMQPWorker)
    assert fresh is not worker
    assert fresh.settings.queues == ("b",)
    assert (fresh.settings.max_concurrency, fresh.settings.effective_prefetch) == (4, 9)
    assert fresh.settings.url == worker.settings.url
    assert fresh.handlers == ("h",)
    assert fresh.hooks is not worker.hooks
    assert bool(fresh.hooks)  # the on_parked hook came along
    assert fresh.retry is policy
    assert fresh.timeout_s == 3
    assert rebuilt(worker) is worker

    simple = SimpleWorker()
    simple.register("h", handler)
    assert rebuilt(simple, max_concurrency=2).handlers == ("h",)
