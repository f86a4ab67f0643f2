"""Fixtures of the dashboard tests: a headless Chromium driven by selenium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.harness import CHROMEDRIVER, CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, through its ChromeDriver (scripts/ensure-chromium)."""
    if os.environ.get("AMQP_WORKER_NO_BROWSER"):
        pytest.skip("AMQP_WORKER_NO_BROWSER is set: browser tests skipped")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/ensure-chromium "
            "(apt-get install chromium chromium-driver), or set AMQP_WORKER_NO_BROWSER=1"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
