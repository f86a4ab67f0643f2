"""examples/dashboard_mounted.py: the read-only dashboard under /jobs of a FastAPI app."""

from __future__ import annotations

import importlib
import sys

import httpx
import pytest

from tests.harness.brokertools import BROKER_URL, delete_topology
from tests.web.harness import park, unique_name

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


async def test_the_mounted_dashboard_shows_failed_jobs_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = unique_name()
    monkeypatch.setenv("AMQP_WORKER_URL", BROKER_URL)
    monkeypatch.setenv("AMQP_WORKER_NAME", name)
    monkeypatch.setenv("AMQP_WORKER_QUEUES", "emails")
    sys.modules.pop("examples.dashboard_mounted", None)
    example = importlib.import_module("examples.dashboard_mounted")
    try:
        [job_id] = await park(example.jobs.settings, "emails", 1, error="mounted quokka")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=example.app), base_url="http://app"
        ) as client:
            page = await client.get("/jobs/failed", params={"text": "quokka"})
            assert page.status_code == 200
            assert job_id in page.text
            assert "read-only" in page.text
            assert 'href="http://app/jobs/failed/job?' in page.text
            refused = await client.post("/jobs/failed/action", data={"op": "purge:matching"})
            assert refused.status_code == 403
    finally:
        await example.jobs.aclose()
        await delete_topology(example.jobs.settings.topology, ["emails"])
        sys.modules.pop("examples.dashboard_mounted", None)
