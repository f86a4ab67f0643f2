"""Exit codes and one-line errors of ``amqp-worker``, where no broker is needed."""

from __future__ import annotations

import pytest

from amqp_worker.cli import ExitCode
from tests.cli.conftest import UNREACHABLE_URL, base_env, cli, one_line_error
from tests.harness.brokertools import broker_url


def test_help_lists_every_command() -> None:
    result = cli("--help")
    assert result.returncode == ExitCode.OK
    for command in (
        "run",
        "enqueue",
        "queues",
        "check",
        "failed",
        "schedules",
        "dashboard",
        "asyncapi",
    ):
        assert command in result.stdout
    failed = cli("failed", "--help")
    for command in ("list", "show", "retry", "purge"):
        assert command in failed.stdout


def test_version() -> None:
    result = cli("--version")
    assert result.returncode == ExitCode.OK
    assert result.stdout.startswith("amqp-worker ")


def test_the_installed_script_is_the_same_command() -> None:
    import shutil
    import subprocess

    script = shutil.which("amqp-worker")
    if script is None:
        pytest.skip("amqp-worker is not on PATH (not installed with pip install -e .)")
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert "enqueue" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("failed", "list", "--url", "http://x"),
        ("queues", "--url", "http://x"),
        ("check", "--url", "amqp://guest:s3cret@host:port/"),
        ("enqueue", "-q", "a", "-H", "h", "--url", "http://x"),
        ("run", "tests.cli.app:worker", "--url", "http://x"),
    ],
)
def test_a_malformed_url_is_a_config_error(args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "url" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


def test_a_bad_url_in_the_environment_is_a_config_error_too() -> None:
    env = base_env(AMQP_WORKER_URL="http://user:s3cret@x/")
    for args in (("failed", "list"), ("run", "tests.cli.app:worker")):
        result = cli(*args, env=env)
        assert result.returncode == ExitCode.CONFIG, result.stderr
        assert "must start with amqp:// or amqps://" in result.stderr
        assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "tests.cli.app:worker", "-c", "0"), "--concurrency"),
        (("run", "tests.cli.app:worker", "--log-format", "xml"), "--log-format"),
        (("run", "tests.cli.app"), "module:attr"),
        (("enqueue", "-q", "a", "-H", "h", "--args", "{nope"), "not valid JSON"),
        (("enqueue", "-q", "a", "-H", "h", "--args", "[1, 2]"), "must be a JSON object"),
        (("enqueue", "-q", "a", "-H", "h", "--in", "5 parsecs"), "not a duration"),
        (("enqueue", "-q", "a", "-H", "h", "--in", "-5s"), "not a duration"),
        (("enqueue", "-q", "a", "-H", "h", "--at", "2030-01-01T09:00:00"), "no UTC offset"),
        (("enqueue", "-q", "a", "-H", "h", "--at", "tomorrow"), "not an ISO 8601"),
        (("enqueue", "-q", "a", "-H", "h", "--at", "2030-01-01T09:00Z", "--in", "1s"), "not both"),
        (("enqueue", "-q", "bad*queue", "-H", "h"), "queue"),
        (("enqueue", "-H", "h"), "--queue"),
        (("failed", "retry"), "--all"),
        (("failed", "retry", "some-id", "--all"), "not both"),
        (("failed", "purge", "--yes"), "--all"),
        (("failed", "list", "--limit", "0"), "--limit"),
        (("check", "--timeout", "0"), "--timeout"),
        (("failed", "show", "some-id", "--timeout", "soon"), "--timeout"),
        (("run", "tests.cli.app:worker", "--timeout", "1"), "--timeout"),  # run retries instead
        (("nonsense",), "nonsense"),
    ],
)
def test_bad_options_are_one_line_config_errors(args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.returncode == ExitCode.CONFIG, (result.stdout, result.stderr)
    assert message in one_line_error(result)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.cli.no_such_module:worker", "no module named 'tests.cli.no_such_module'"),
        ("tests.cli.app:no_such_worker", "has no attribute 'no_such_worker'"),
        (
            "tests.cli.app:not_a_worker",
            "is not an AMQPWorker, a SimpleWorker or a zero-argument factory of one (got int)",
        ),
        ("tests.cli.app:needs_args", "needs arguments"),
        (
            "tests.cli.app:returns_nothing",
            "did not return an AMQPWorker or a SimpleWorker (got NoneType)",
        ),
    ],
)
def test_run_with_a_bad_target_is_an_import_error(target: str, message: str) -> None:
    result = cli("run", target)
    assert result.returncode == ExitCode.IMPORT, result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_an_error_while_importing_says_where() -> None:
    result = cli("run", "tests.cli.broken_app:worker")
    assert result.returncode == ExitCode.IMPORT, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "ZeroDivisionError" in line
    assert "broken_app.py:" in line


def test_simple_worker_refuses_amqp_options() -> None:
    result = cli("run", "tests.cli.app:simple", "--queue", "x", "--prefetch", "3")
    assert result.returncode == ExitCode.CONFIG
    assert "--queue, --prefetch only apply to an AMQPWorker" in result.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args",
    [
        ("failed", "list"),
        ("failed", "show", "some-id"),
        ("failed", "retry", "--all"),
        ("failed", "purge", "--all", "--yes"),
        ("queues",),
        ("queues", "--watch"),
        ("check",),
        ("enqueue", "-q", "a", "-H", "h"),
    ],
)
def test_an_unreachable_broker_is_a_one_line_connection_error(args: tuple[str, ...]) -> None:
    # The daemon's AMQP_WORKER_PUBLISH_TIMEOUT_S does not stretch a one-shot command.
    env = base_env(AMQP_WORKER_URL=UNREACHABLE_URL, AMQP_WORKER_PUBLISH_TIMEOUT_S="60")
    result = cli(*args, "--timeout", "0.5", env=env)
    assert result.returncode == ExitCode.CONNECTION, result.stderr
    line = one_line_error(result)
    assert "cannot connect to amqp://127.0.0.1:1 vhost=/ within 0.5s" in line


@pytest.mark.timeout(60)
def test_one_shot_commands_wait_5s_by_default() -> None:
    env = base_env(AMQP_WORKER_PUBLISH_TIMEOUT_S="60")
    result = cli("check", "--url", UNREACHABLE_URL, env=env)
    assert result.returncode == ExitCode.CONNECTION, result.stderr
    assert "cannot connect to amqp://127.0.0.1:1 vhost=/ within 5s" in one_line_error(result)


#: Passwords a URL parser can get wrong; each must stay out of every message.
AWKWARD_URLS = [
    "amqp://guest:s3cret@pw@127.0.0.1:1/",  # a raw @
    "amqp://guest:s3cret/pw@127.0.0.1:1/",  # a raw /: urllib reads "s3cret" as the port
    "amqp://guest:1/s3cret@127.0.0.1:1/",  # ... and here as a valid port 1 of host "guest"
    "amqp://guest:s3cret%40pw@127.0.0.1:1/",  # %-escaped
    "amqp://guest:s3cret pw@127.0.0.1:1/",  # whitespace
    "amqp://a:s3cret-1@127.0.0.1:1/,amqp://b:s3cret-2@127.0.0.1:2/",  # a list (not yet supported)
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", AWKWARD_URLS)
def test_no_password_is_printed_whatever_the_url(url: str) -> None:
    by_option = cli("check", "--url", url, "--timeout", "0.2")
    by_env = cli("failed", "list", "--timeout", "0.2", env=base_env(AMQP_WORKER_URL=url))
    mistyped = cli("check", url)  # forgot --url: click echoes the argument
    for result in (by_option, by_env, mistyped):
        assert result.returncode in (ExitCode.CONFIG, ExitCode.CONNECTION), result.stderr
        one_line_error(result)  # one line, no traceback, no "s3cret"


@pytest.mark.timeout(60)
def test_run_with_an_unreachable_broker_exits_with_the_connection_code() -> None:
    env = base_env(AMQP_WORKER_PUBLISH_TIMEOUT_S="1")
    result = cli("run", "tests.cli.app:worker", "--url", UNREACHABLE_URL, env=env)
    assert result.returncode == ExitCode.CONNECTION, result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
    banner, error = result.stderr.strip().splitlines()
    assert banner.startswith("amqp-worker ")
    assert "amqp://127.0.0.1:1 vhost=/" in banner
    assert error.startswith(
        "amqp-worker: error: cannot connect to amqp://127.0.0.1:1 vhost=/ within 1s ("
    )


@pytest.mark.timeout(60)
def test_a_health_port_in_use_is_a_config_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = cli(
            "run", "tests.cli.app:simple", "--health-port", port, "--health-host", "127.0.0.1"
        )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert f"cannot serve the health check on 127.0.0.1:{port}" in result.stderr.splitlines()[-1]


@pytest.mark.broker
@pytest.mark.timeout(30)
def test_a_wrong_password_is_a_one_line_connection_error() -> None:
    env = base_env(AMQP_WORKER_URL=broker_url(password="s3cret-pw"))
    result = cli("check", env=env)
    assert result.returncode == ExitCode.CONNECTION, result.stderr
    line = one_line_error(result)
    assert "refused the login" in line
    assert "s3cret" not in result.stderr
