"""The dashboard's Limits page: handlers' fleet-wide limits, the jobs waiting for them; ``--app``."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from amqp_worker import AMQPWorker, Job
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.cli import ExitCode, run_cli
from amqp_worker.dashboard import Dashboard, DashboardSettings
from amqp_worker.testing import delete_topology
from tests.harness.brokertools import BROKER_URL
from tests.web.harness import unique_name


def cells(page: str, handler: str) -> list[str]:
    """The cells of ``handler``'s row on the Limits page."""
    row = re.search(rf'<tr data-handler="{re.escape(handler)}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {handler}"
    return re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))


def client(dashboard: Dashboard) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=dashboard), base_url="http://testserver"
    )


async def test_without_the_limits_the_page_says_to_start_it_with_app() -> None:
    settings = AMQPSettings.from_url(BROKER_URL, name=unique_name(), queues=["emails"])
    dashboard = Dashboard(settings, DashboardSettings())
    try:
        async with client(dashboard) as http:
            page = await http.get("/limits")
            assert page.status_code == 200
            assert "--app MODULE:ATTR" in page.text
            assert 'href="http://testserver/limits" aria-current="page"' in page.text
            assert "Limits" in (await http.get("/failed?text=x")).text  # in every page's nav
    finally:
        await dashboard.aclose()


async def test_a_worker_without_limited_handlers_is_said_to_have_none() -> None:
    settings = AMQPSettings.from_url(BROKER_URL, name=unique_name(), queues=["emails"])
    dashboard = Dashboard(settings, DashboardSettings(), limits={})
    try:
        async with client(dashboard) as http:
            page = (await http.get("/limits")).text
            assert "No handler of this worker has a rate or concurrency limit" in page
            assert "--app" not in page
    finally:
        await dashboard.aclose()


@pytest.mark.broker
@pytest.mark.timeout(90)
async def test_the_page_shows_each_limit_and_the_jobs_waiting_for_it() -> None:
    name = unique_name()
    queue = f"{name}.emails"
    worker = AMQPWorker(BROKER_URL, name=name, queues=[queue], publish_timeout_s=10)
    release = asyncio.Event()

    async def capped(args: dict[str, Any]) -> None:
        await release.wait()

    worker.register("capped", capped, concurrency=2)
    worker.register("rated", lambda args: None, rate="5/s", burst=2)
    worker.register("free", lambda args: None)
    dashboard = Dashboard(worker.settings, DashboardSettings(), limits=worker.limits)
    try:
        async with client(dashboard) as http:
            before = (await http.get("/limits")).text
            assert cells(before, "capped") == ["capped", "—", "—", "2", "—", "—", "—", "—", "—"]
            assert cells(before, "rated") == ["rated", "5/s", "2", "—", "—", "—", "—", "—", "—"]
            assert 'data-handler="free"' not in before
            async with worker:
                for _ in range(4):
                    await worker.perform(Job(handler="capped", queue=queue))
                # Two run (one per lane), two wait in the broker.
                for _ in range(200):
                    page = (await http.get("/limits")).text
                    if cells(page, "capped")[5] == "2":
                        break
                    await asyncio.sleep(0.1)
                assert cells(page, "capped") == ["capped", "—", "—", "2", "—", "2", "—", "1", "—"]
                rated = cells(page, "rated")
                assert rated[:6] == ["rated", "5/s", "2", "—", "—", "0"]
                assert rated[7:] == ["1", "yes"]
                overview = (await http.get("/api/overview")).json()
                by_handler = {row["handler"]: row for row in overview["limits"]}
                assert by_handler["capped"]["concurrency"] == 2
                assert by_handler["capped"]["waiting"] == 2
                assert by_handler["rated"]["rate"] == "5/s"
                assert by_handler["rated"]["burst"] == 2
                assert by_handler["rated"]["leader"] is True
                release.set()
        without = Dashboard(worker.settings, DashboardSettings())
        try:
            async with client(without) as http:
                assert (await http.get("/api/overview")).json()["limits"] == []
        finally:
            await without.aclose()
    finally:
        release.set()
        await dashboard.aclose()
        await delete_topology(worker)


# -- amqp-worker dashboard --app ------------------------------------------------


def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A module of ``source`` importable from the current directory; its name."""
    module = f"awdash_app_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return module


def captured_serve(monkeypatch: pytest.MonkeyPatch) -> list[Dashboard]:
    """Make ``amqp-worker dashboard`` hand its app over instead of serving it."""
    served: list[Dashboard] = []
    monkeypatch.setattr("amqp_worker.dashboard.serve.serve", served.append)
    return served


def test_app_passes_the_workers_limits_to_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = app_module(
        tmp_path,
        monkeypatch,
        "from amqp_worker import AMQPWorker\n"
        f"worker = AMQPWorker({BROKER_URL!r}, queues=['emails'])\n"
        "worker.register('rated', lambda args: None, rate='5/s', burst=2)\n"
        "worker.register('capped', lambda args: None, concurrency=2)\n",
    )
    served = captured_serve(monkeypatch)
    monkeypatch.setenv("AMQP_WORKER_URL", BROKER_URL)
    assert run_cli(["dashboard", "--app", f"{module}:worker"]) == ExitCode.OK
    [dashboard] = served
    assert dashboard.limits is not None
    assert sorted(dashboard.limits) == ["capped", "rated"]
    assert dashboard.limits["rated"].rate == "5/s"
    assert dashboard.limits["capped"].concurrency == 2


def test_app_naming_anything_but_an_amqp_worker_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = app_module(
        tmp_path, monkeypatch, "from amqp_worker import SimpleWorker\nworker = SimpleWorker()\n"
    )
    served = captured_serve(monkeypatch)
    monkeypatch.setenv("AMQP_WORKER_URL", BROKER_URL)
    assert run_cli(["dashboard", "--app", f"{module}:worker"]) == ExitCode.CONFIG
    assert served == []
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "SimpleWorker" in line
    assert "AMQPWorker" in line
