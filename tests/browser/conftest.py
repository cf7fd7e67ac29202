"""Browser fixtures: headless Chromium driven by Selenium against a live server of the test environment.

* Chromium and ChromeDriver are Debian's `chromium` and `chromium-driver`; `scripts/browser.py` installs them
  when missing. A browser that cannot be had fails the run with one sentence, never a skip.
* The live server is Django's LiveServerThread in this process, on a free loopback port, with the test
  settings and the real database; static files (the admin's CSS and JavaScript) are served by
  django.contrib.staticfiles' handler, as `runserver` does, so no collectstatic is needed.
* The worker that runs "back up now" is a real Celery worker on the test broker, started for this
  module's tests and stopped by pid after them.
* Screenshots go to var/browser/.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.test.testcases import LiveServerThread

from tests.integration.conftest import live_db  # noqa: F401 - database access without a wrapping transaction

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "browser"
WIDTH, HEIGHT = 1400, 1000


def _browser_script():
    spec = importlib.util.spec_from_file_location("browser_script", ROOT / "scripts" / "browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver), installed by scripts/browser.py if missing; a failure fails, in one sentence."""
    script = _browser_script()
    try:
        return script.ensure_browser()
    except script.BrowserError as exc:
        pytest.fail(str(exc), pytrace=False)


@dataclass(frozen=True)
class LiveServer:
    """A live server on 127.0.0.1:port; hosts pick the tenant (localhost is the public, ops domain)."""

    port: int

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="session")
def live_server_admin(django_db_setup, django_db_blocker) -> Iterator[LiveServer]:  # noqa: F811
    """Django's live server thread with static files, on a free loopback port, for the whole session."""
    thread = LiveServerThread("127.0.0.1", StaticFilesHandler, port=0)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait(timeout=30)
    if thread.error:
        raise thread.error
    try:
        yield LiveServer(port=thread.port)
    finally:
        with django_db_blocker.unblock():
            thread.terminate()


@pytest.fixture
def browser_worker(celery_worker):  # noqa: F811
    """The session's real Celery worker (the "back up now" action enqueues on the real broker)."""
    return celery_worker


@pytest.fixture(scope="session")
def browser(browser_paths) -> Iterator:
    """One headless Chromium, 1400 px wide, for the session."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WIDTH},{HEIGHT}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    os.environ.setdefault("SE_AVOID_STATS", "true")
    service = Service(executable_path=chromedriver, log_output=str(SCREENSHOTS / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.fail(f"Chromium ({chromium}) did not start under ChromeDriver ({chromedriver}): "
                    f"{exc.msg or exc}", pytrace=False)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    driver.set_window_size(WIDTH, HEIGHT)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass(frozen=True)
class Operator:
    """The superuser the browser logs in as (made by the test, on the public schema)."""

    username: str
    password: str


@pytest.fixture(scope="session")
def operator(django_db_setup, django_db_blocker) -> Operator:  # noqa: F811
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    password = secrets.token_urlsafe(16)
    with django_db_blocker.unblock(), schema_context("public"):
        User = get_user_model()
        user = User.objects.filter(username="ops-browser-test").first() or User(username="ops-browser-test",
                                                                                 email="ops-browser@example.com")
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
    # the user stays: deleting it cascades into token tables that live only in tenant schemas
    return Operator(username=user.username, password=password)


def screenshot(driver, name: str) -> Path:
    """Save a full-width screenshot under var/browser/ and return its path."""
    path = SCREENSHOTS / f"{name}.png"
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 4000)")
    driver.set_window_size(WIDTH, max(HEIGHT, int(height) + 140))
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, HEIGHT)
    return path

