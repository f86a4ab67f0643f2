"""The dashboard in a real browser (Debian's Chromium, selenium), against the real broker.

Each test serves its own dashboard for a fresh worker name. Waits poll the
page until a condition holds, with a generous deadline; nothing is timed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from amqp_worker import Job, RetryPolicy
from amqp_worker._rabbitmq.inspection import QueueInspector
from tests.web.harness import Served, park, served

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30


def wait_for(driver: WebDriver, condition: Any, message: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d), message)


def cell(driver: WebDriver, queue: str, field: str) -> str:
    selector = f'#queues tr[data-queue="{queue}"] [data-field="{field}"]'
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def failed_count(here: Served) -> int:
    async def count() -> int:
        async with QueueInspector(here.settings) as inspector:
            stat = await inspector.stat(here.settings.topology.failed_queue(here.queue))
            return 0 if stat is None else stat.ready

    return here.background.run(count())


def test_overview_counts_change_live_as_jobs_are_published(browser: WebDriver) -> None:
    with served() as here:
        browser.get(here.url)
        assert browser.find_element(By.CSS_SELECTOR, f'tr[data-queue="{here.queue}"]')
        # A mark in the page's JS state: a reload would wipe it.
        browser.execute_script("window.awMark = 'still here'")
        publisher = here.worker()

        async def publish(count: int) -> None:
            for i in range(count):
                await publisher.perform(Job(queue=here.queue, handler="noop", args={"i": i}))

        here.background.run(publish(7))
        wait_for(browser, lambda d: cell(d, here.queue, "ready") == "7", "ready never showed 7")
        here.background.run(publish(5))
        wait_for(browser, lambda d: cell(d, here.queue, "ready") == "12", "ready never showed 12")
        assert browser.execute_script("return window.awMark") == "still here"
        assert browser.find_element(By.ID, "total-ready").text == "12"
        # The chart has drawn the ready line from the samples it has seen.
        wait_for(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#chart polyline"),
            "no chart line",
        )


def test_a_parked_job_is_found_by_its_error_shown_with_its_traceback_and_retried(
    browser: WebDriver,
) -> None:
    with served() as here:
        fixed = threading.Event()
        ran = threading.Event()
        worker = here.worker(retry=RetryPolicy(max_retries=0))

        @worker.handler("send_email")
        async def send_email(args: dict[str, Any]) -> None:
            if not fixed.is_set():
                raise ValueError(f"mailbox of {args['to']} on zanzibar is full")
            ran.set()  # the mark the retried job leaves

        async def start() -> str:
            await worker.start()
            job = Job(queue=here.queue, handler="send_email", args={"to": "ada@example.com"})
            await worker.perform(job)
            return job.id

        job_id = here.background.run(start())
        # Some decoys that must not match the search.
        here.background.run(park(here.settings, here.queue, 3, error="connection reset"))

        browser.get(here.url + "failed")
        wait_for(browser, lambda d: _rows(d) == 4 or d.refresh() or False, "4 parked jobs")
        search = browser.find_element(By.ID, "search-text")
        search.send_keys("zanzibar")
        browser.find_element(By.ID, "search-button").click()
        wait_for(browser, lambda d: "zanzibar" in d.current_url, "search submitted")
        assert _rows(browser) == 1
        assert "1 matching" in browser.find_element(By.ID, "result-count").text

        browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{job_id}"] td.mono a').click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "job-id"), "detail page")
        assert browser.find_element(By.ID, "job-id").text == job_id
        assert "zanzibar" in browser.find_element(By.ID, "last-error").text
        traceback = browser.find_element(By.ID, "traceback").text
        assert "Traceback (most recent call last)" in traceback
        assert "ValueError: mailbox of ada@example.com on zanzibar is full" in traceback
        assert "ada@example.com" in browser.find_element(By.ID, "job-args").text

        fixed.set()
        browser.find_element(By.ID, "retry-one").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "notice"), "a notice after retry")
        assert browser.find_element(By.ID, "notice").text == "Retried 1 job."
        assert ran.wait(WAIT_S), "the retried job never ran"
        assert failed_count(here) == 3


def test_select_all_matching_and_purge_after_a_confirmation_stating_the_count(
    browser: WebDriver,
) -> None:
    with served() as here:
        here.background.run(park(here.settings, here.queue, 20, error="quokka ate the cable"))
        here.background.run(park(here.settings, here.queue, 9, error="disk full"))

        browser.get(here.url + "failed?text=quokka")
        assert "20 matching" in browser.find_element(By.ID, "result-count").text
        browser.find_element(By.ID, "purge-matching").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "confirm"), "a confirmation page")
        assert browser.find_element(By.CSS_SELECTOR, "#confirm h1").text == (
            "Purge 20 failed jobs?"
        )
        assert failed_count(here) == 29  # nothing happens before the confirmation
        browser.find_element(By.ID, "confirm-button").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "notice"), "a notice after purge")
        assert browser.find_element(By.ID, "notice").text == "Purged 20 jobs."
        assert failed_count(here) == 9
        assert _rows(browser) == 0  # the search is kept: nothing matches it any more

        # Selected rows: two of the rest, through the same confirmation.
        browser.get(here.url + "failed")
        boxes = browser.find_elements(By.CSS_SELECTOR, "input.pick")
        assert len(boxes) == 9
        boxes[0].click()
        boxes[1].click()
        browser.find_element(By.ID, "purge-selected").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "confirm"), "a confirmation page")
        assert "Purge 2 failed jobs?" in browser.find_element(By.CSS_SELECTOR, "#confirm h1").text
        browser.find_element(By.ID, "confirm-button").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "notice"), "a notice after purge")
        assert failed_count(here) == 7


def test_read_only_mode_shows_no_control_that_changes_state(browser: WebDriver) -> None:
    with served(read_only=True) as here:
        [job_id] = here.background.run(park(here.settings, here.queue, 1))
        for path in ("", "failed", f"failed/job?id={job_id}", "delayed", "schedules", "workers"):
            browser.get(here.url + path)
            assert browser.find_element(By.ID, "read-only").text == "read-only"
            assert browser.find_elements(By.CSS_SELECTOR, "form[method=post]") == [], path
            assert browser.find_elements(By.CSS_SELECTOR, "button[name=op]") == [], path
            assert browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]") == [], path
        # A hand-made POST, even with the page's token, changes nothing.
        _post_from_page(browser, here, {"op": "purge:matching", "csrf": here.dashboard.csrf.value})
        assert "read-only" in browser.find_element(By.TAG_NAME, "body").text
        assert failed_count(here) == 1


def test_a_post_without_the_csrf_token_is_refused(browser: WebDriver) -> None:
    with served() as here:
        here.background.run(park(here.settings, here.queue, 4))
        browser.get(here.url + "failed")
        _post_from_page(browser, here, {"op": "purge:matching", "confirmed": "4"})
        assert "CSRF token missing or wrong" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(here.url + "failed")
        _post_from_page(browser, here, {"op": "purge:matching", "confirmed": "4", "csrf": "x" * 43})
        assert "CSRF token missing or wrong" in browser.find_element(By.TAG_NAME, "body").text
        assert failed_count(here) == 4


def test_screenshots_of_the_overview_and_failed_jobs(browser: WebDriver, tmp_path: Path) -> None:
    """Takes the README's screenshots (written to docs/images with AMQP_WORKER_UPDATE_SCREENSHOTS=1)."""
    with served() as here:
        publisher = here.worker()

        async def seed() -> None:
            for i in range(42):
                await publisher.perform(Job(queue=here.queue, handler="send_email", args={"i": i}))

        here.background.run(seed())
        here.background.run(park(here.settings, here.queue, 6, error="SMTP 451 try again later"))
        here.background.run(
            park(
                here.settings, here.queue, 3, handler="resize_image", error="cannot identify image"
            )
        )
        browser.get(here.url)
        wait_for(browser, lambda d: cell(d, here.queue, "failed") == "9", "failed shows 9")
        # A few more jobs while the page samples, so the chart has a trend to draw.
        for _ in range(3):
            here.background.run(seed())
            before = browser.find_element(By.ID, "updated").text
            wait_for(
                browser,
                lambda d, before=before: d.find_element(By.ID, "updated").text != before,
                "a refresh",
            )
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart polyline"), "chart")
        shots = [("dashboard-overview.png", ""), ("dashboard-failed.png", here.url + "failed")]
        for filename, url in shots:
            if url:
                browser.get(url)
            path = tmp_path / filename
            assert browser.save_screenshot(str(path))
            png = path.read_bytes()
            assert png.startswith(b"\x89PNG")
            assert len(png) > 10_000
            if os.environ.get("AMQP_WORKER_UPDATE_SCREENSHOTS"):
                (ROOT / "docs" / "images").mkdir(exist_ok=True)
                (ROOT / "docs" / "images" / filename).write_bytes(png)


def _rows(driver: WebDriver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#failed-table tbody tr[data-id]"))


def _post_from_page(driver: WebDriver, here: Served, fields: dict[str, str]) -> None:
    """Submit a form the page did not render, as another script or a forged page would."""
    driver.execute_script(
        """
        const form = document.createElement('form');
        form.method = 'post';
        form.action = arguments[0];
        for (const [name, value] of Object.entries(arguments[1])) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
        """,
        here.url + "failed/action",
        fields,
    )
    wait_for(driver, lambda d: "failed/action" in d.current_url, "the POST answered")
