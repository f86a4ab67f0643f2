"""The dashboard over HTTP (httpx against uvicorn, or mounted in an app): its safety rules
and the pages the browser tests don't walk through."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from amqp_worker import Job
from amqp_worker._rabbitmq.settings import AMQPSettings
from amqp_worker.dashboard import Dashboard, DashboardSettings
from tests.harness.brokertools import BROKER_ADDRESS, BROKER_URL, delete_topology, queue_state
from tests.harness.leakwatch import SecretUser
from tests.web.harness import Served, park, served, unique_name

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

PAGES = ("", "api/overview", "failed", "delayed", "schedules", "workers", "limits", "failed?text=x")


def token(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def failed_ready(here: Served) -> int:
    state = here.background.run(queue_state(here.settings.topology.failed_queue(here.queue)))
    assert state is not None
    return state[0]


@pytest.fixture
def secret_user() -> Iterator[SecretUser]:
    user = SecretUser.create()
    yield user
    user.delete()


def test_every_response_carries_the_security_headers() -> None:
    with served() as here:
        for path in (*PAGES, "static/dashboard.js"):
            response = httpx.get(here.url + path)
            assert response.status_code == 200, path
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"


def test_basic_auth_guards_every_path_static_files_included() -> None:
    with served(auth="ops:Zq9-dash-pw") as here:
        for path in (*PAGES, "static/dashboard.css", "failed/action"):
            refused = httpx.get(here.url + path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert httpx.get(here.url + path, auth=("ops", "wrong")).status_code == 401
            assert httpx.get(here.url + path, auth=("other", "Zq9-dash-pw")).status_code == 401
        page = httpx.get(here.url, auth=("ops", "Zq9-dash-pw"))
        assert page.status_code == 200
        assert "Zq9-dash-pw" not in page.text


def test_no_page_holds_the_broker_password(secret_user: SecretUser) -> None:
    with served(url=secret_user.url()) as here:
        [job_id] = here.background.run(park(here.settings, here.queue, 1))
        for path in (*PAGES, f"failed/job?id={job_id}"):
            text = httpx.get(here.url + path).text
            assert secret_user.password not in text, path
        assert BROKER_ADDRESS in httpx.get(here.url).text  # the broker is named, without it


def test_a_post_from_another_origin_is_refused_even_with_the_token() -> None:
    with served() as here:
        here.background.run(park(here.settings, here.queue, 2))
        csrf = token(httpx.get(here.url + "failed").text)
        form = {"op": "purge:matching", "confirmed": "2", "csrf": csrf}
        evil = httpx.post(
            here.url + "failed/action", data=form, headers={"Origin": "http://evil.example"}
        )
        assert evil.status_code == 403
        assert failed_ready(here) == 2
        same = httpx.post(here.url + "failed/action", data=form, headers={"Origin": here.url[:-1]})
        assert same.status_code == 303
        assert failed_ready(here) == 0


def test_a_count_that_changed_since_the_confirmation_is_asked_again() -> None:
    with served() as here:
        here.background.run(park(here.settings, here.queue, 3, error="quokka"))
        csrf = token(httpx.get(here.url + "failed").text)
        form = {"op": "retry:matching", "text": "quokka", "csrf": csrf, "confirmed": "2"}
        again = httpx.post(here.url + "failed/action", data=form)
        assert again.status_code == 200
        assert "now 3" in again.text
        assert "Retry 3 failed jobs?" in again.text
        assert failed_ready(here) == 3
        unknown = httpx.post(here.url + "failed/action", data={**form, "op": "explode:all"})
        assert unknown.status_code == 400


def test_paging_reads_only_as_far_as_the_page_and_keeps_the_queue_as_it_was() -> None:
    with served() as here:
        ids = here.background.run(park(here.settings, here.queue, 120))
        first = httpx.get(here.url + "failed").text
        assert "120 failed jobs" in first
        assert ids[0] in first
        assert ids[50] not in first
        third = httpx.get(here.url + "failed?page=3").text
        assert ids[100] in third
        assert ids[99] not in third
        assert "page 3 of 3" in third
        assert failed_ready(here) == 120
        # Read again: the same order, nothing taken.
        assert ids[0] in httpx.get(here.url + "failed").text.split("data-id")[1]


def test_the_detail_of_a_job_that_is_gone_is_a_404() -> None:
    with served() as here:
        response = httpx.get(here.url + "failed/job?id=no-such-job")
        assert response.status_code == 404
        assert "no-such-job" in response.text


def test_the_delayed_page_lists_the_next_due_jobs_of_a_queue_and_leaves_them_waiting() -> None:
    with served() as here:
        publisher = here.worker()

        async def delay() -> list[str]:
            return [
                await publisher.perform_in(
                    Job(queue=here.queue, handler="later", args={"i": i}), timedelta(hours=1 + i)
                )
                for i in range(3)
            ]

        ids = here.background.run(delay())
        page = httpx.get(here.url + "delayed").text
        assert 'id="delayed-total">3<' in page
        listed = httpx.get(here.url + "delayed", params={"queue": here.queue}).text
        positions = [listed.index(job_id) for job_id in ids]
        assert positions == sorted(positions)  # soonest first
        assert "in 60 min" in listed
        assert 'id="delayed-total">3<' in httpx.get(here.url + "delayed").text


def test_the_schedules_page_shows_the_leaders_view() -> None:
    with served() as here:
        assert "No periodic jobs" in httpx.get(here.url + "schedules").text
        worker = here.worker()
        worker.schedule("nightly-report", Job(queue=here.queue, handler="report"), cron="0 3 * * *")

        @worker.handler("report")
        async def report(args: dict[str, object]) -> None:
            pass

        here.background.run(worker.start())
        for _ in range(100):
            page = httpx.get(here.url + "schedules").text
            if "nightly-report" in page:
                break
            here.background.run(_sleep(0.1))
        assert "nightly-report" in page
        assert "0 3 * * *" in page
        assert "03:00:00" in page  # the next tick


def test_the_workers_page_counts_consumers_and_says_what_needs_the_management_api() -> None:
    with served() as here:
        worker = here.worker()

        @worker.handler("noop")
        async def noop(args: dict[str, object]) -> None:
            pass

        here.background.run(worker.start())
        page = httpx.get(here.url + "workers").text
        assert "management API" in page
        assert re.search(rf"{re.escape(here.queue)}</td><td class=\"n\">1<", page)


async def test_mounted_under_a_prefix_every_link_and_redirect_stays_under_it() -> None:
    name = unique_name()
    queue = f"{name}.emails"
    settings = AMQPSettings.from_url(BROKER_URL, name=name, queues=[queue])
    dashboard = Dashboard(settings, DashboardSettings())
    app = Starlette(routes=[Mount("/jobs", app=dashboard)])
    try:
        await park(settings, queue, 1)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            page = (await client.get("/jobs/failed")).text
            links = re.findall(r'(?:href|src|action)="([^"?#]+)', page)
            assert links
            assert all(link.startswith("http://testserver/jobs/") for link in links), links
            response = await client.post(
                "/jobs/failed/action", data={"op": "retry:matching", "csrf": token(page)}
            )
            assert "Retry 1 failed job?" in response.text
            done = await client.post(
                "/jobs/failed/action",
                data={"op": "retry:matching", "csrf": token(page), "confirmed": "1"},
            )
            assert done.status_code == 303
            assert done.headers["location"].startswith("http://testserver/jobs/failed?")
    finally:
        await dashboard.aclose()
        await delete_topology(settings.topology, [queue])


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_an_unreachable_broker_is_a_503_page_without_a_traceback_or_password() -> None:
    settings = AMQPSettings.from_url(
        "amqp://guest:Zq9-unreachable-pw@127.0.0.1:1/", queues=["emails"], publish_timeout_s=0.5
    )
    dashboard = Dashboard(settings, DashboardSettings())
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dashboard), base_url="http://testserver"
        ) as client:
            for path in ("/", "/failed", "/failed?text=x", "/delayed", "/schedules", "/workers"):
                page = await client.get(path)
                assert page.status_code == 503, path
                assert "The broker did not answer" in page.text
                assert "Zq9-unreachable-pw" not in page.text
                assert "Traceback" not in page.text
            api = await client.get("/api/overview")
            assert api.status_code == 503
            assert api.json()["error"].startswith("broker unavailable")
    finally:
        await dashboard.aclose()
