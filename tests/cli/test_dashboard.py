"""``amqp-worker dashboard`` as a subprocess: safe defaults, one-line errors, serving pages."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.cli.conftest import COMMAND, ROOT, base_env, cli, one_line_error
from tests.web.harness import free_port


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10"])
def test_binding_beyond_loopback_without_auth_is_refused(host: str) -> None:
    result = cli("dashboard", "--host", host)
    assert result.returncode == 2
    assert "set auth" in one_line_error(result)


def test_a_malformed_auth_is_refused_without_being_echoed() -> None:
    result = cli("dashboard", "--auth", "s3cret-no-colon")
    assert result.returncode == 2
    assert "user:password" in one_line_error(result)


@pytest.mark.broker
def test_it_serves_the_pages_with_basic_auth_and_stops_on_sigterm() -> None:
    port = free_port()
    env = base_env(AMQP_WORKER_DASHBOARD_AUTH="ops:s3cret-pw", AMQP_WORKER_QUEUES="awcli.dash")
    process = subprocess.Popen(
        [*COMMAND, "dashboard", "--port", str(port), "--read-only"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(200):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(url).status_code == 401
        page = httpx.get(url, auth=("ops", "s3cret-pw"))
        assert page.status_code == 200
        assert "awcli.dash" in page.text
        assert "read-only" in page.text
        assert "s3cret" not in page.text
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err
    assert "s3cret" not in out + err
