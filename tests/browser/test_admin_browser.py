"""What an operator sees in a real browser: log in, the dashboard, a tenant's backups, "back up now" until it
succeeds, and the API docs on a tenant domain. Screenshots under var/browser/."""

from __future__ import annotations

import json
import re
import time
import warnings
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from backups.catalog.finalize import backup_record_delete
from backups.models import BackupRecord
from tests.integration.conftest import fake_tenants  # noqa: F401 - fixture
from tests.integration.helpers import catalog_record

from .conftest import WIDTH, screenshot

pytestmark = pytest.mark.timeout(1200)  # the first run may install Chromium with apt-get
SIZE = re.compile(r"^\d+(\.\d+)? (B|kB|MB|GB|TB)$")


def _login(driver, live, operator) -> None:
    driver.get(live.url("/admin/login/"))
    driver.delete_all_cookies()  # the current page's domain only: on the admin's, a session of an earlier test goes
    driver.get(live.url("/admin/login/?next=/admin/"))
    driver.find_element(By.NAME, "username").send_keys(operator.username)
    driver.find_element(By.NAME, "password").send_keys(operator.password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "user-tools")))


def _assert_styled_and_fits(driver) -> None:
    """The admin's own CSS is loaded (the header is laid out by base.css), and nothing is wider than the window."""
    assert driver.execute_script("return getComputedStyle(document.getElementById('header')).display") == "flex"
    page, window = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert page <= window, f"the page is {page} px wide in a {window} px window"
    table = driver.execute_script(
        "const t = document.querySelector('#result_list'); if (!t) return null;"
        "const box = t.closest('.results') || t.parentElement; return [t.scrollWidth, box.clientWidth];")
    if table:
        assert table[0] <= table[1], f"the table is {table[0]} px wide in a {table[1]} px box"


@pytest.fixture
def fleet_history(fake_tenants):  # noqa: F811
    """Two weeks of catalog rows for three stand-in tenants (rows only, no dumps), one failure today."""
    tenants = fake_tenants("browser_fleet_", 3, due_at=timezone.now() + timedelta(days=1))
    for i, tenant in enumerate(tenants):
        for day in range(14):
            catalog_record(tenant, "succeeded", minutes_ago=(day * 24 + 2) * 60 + i,
                           seconds=20 + 3 * i + (14 - day) * (1 + i), size=(40 + 15 * i) * 10**6 + (14 - day) * 10**6)
    catalog_record(tenants[2], "failed", minutes_ago=45, error="pg_dump: error: query failed: lost connection")
    return tenants


def test_dashboard_from_the_admin_index(browser, live_server_admin, operator, fleet_history):
    driver = browser
    _login(driver, live_server_admin, operator)
    assert driver.execute_script("return window.innerWidth") == WIDTH
    driver.find_element(By.CSS_SELECTOR, "#backups-dashboard-link caption a").click()
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "fleet-status")))
    assert driver.title.startswith("Backups dashboard")
    tiles = {t.get_attribute("data-tile"): t.find_element(By.CLASS_NAME, "n").text
             for t in driver.find_elements(By.CSS_SELECTOR, "#fleet-status .tile")}
    assert set(tiles) == {"succeeded", "failed", "overdue", "running"}
    assert all(v.isdigit() for v in tiles.values()), tiles
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.backups-chart")
    assert len(charts) >= 3 and all(c.size["width"] > 100 for c in charts[:3])
    assert driver.find_element(By.ID, "failures").text.startswith("FAILURES IN THE LAST 24 H") or \
        "Failures in the last 24 h" in driver.find_element(By.ID, "failures").text
    _assert_styled_and_fits(driver)
    # one tenant's size and duration over time
    box = driver.find_element(By.ID, "tenant-q")
    box.clear()
    box.send_keys(fleet_history[1].schema_name)
    box.submit()
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "tenant-detail")))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#tenant-detail svg.backups-chart")) == 2
    assert len(driver.find_elements(By.CSS_SELECTOR, "#tenant-detail svg.backups-chart circle")) == 2 * 14
    assert fleet_history[2].schema_name in driver.find_element(By.ID, "failures").text
    assert {t.schema_name for t in fleet_history} <= {
        a.text for a in driver.find_elements(By.CSS_SELECTOR, "#largest tbody td:first-child a")}
    screenshot(driver, "dashboard")
    _assert_styled_and_fits(driver)


def _top_row(driver) -> dict[str, str]:
    row = driver.find_element(By.CSS_SELECTOR, "#result_list tbody tr")
    return {cls.removeprefix("field-"): cell.text for cell in row.find_elements(By.CSS_SELECTOR, "td, th")
            for cls in (cell.get_attribute("class") or "").split() if cls.startswith("field-")}


@pytest.mark.worker
def test_back_up_now_from_the_tenants_list_until_it_succeeds(browser, live_server_admin, operator, browser_worker):
    driver = browser
    _login(driver, live_server_admin, operator)
    driver.get(live_server_admin.url("/admin/tenants/clinica/"))
    names = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#result_list tbody th.field-schema_name a")]
    assert "clinica_demo" in names and "public" not in names
    screenshot(driver, "tenants")
    _assert_styled_and_fits(driver)
    before = set(BackupRecord.objects.filter(schema_name="clinica_demo").values_list("pk", flat=True))
    row = driver.find_element(By.XPATH, "//table[@id='result_list']//tr[th[contains(@class,'field-schema_name')]"
                                        "/a[text()='clinica_demo']]")
    row.find_element(By.CSS_SELECTOR, "input.action-select").click()
    Select(driver.find_element(By.NAME, "action")).select_by_visible_text("Back up the selected tenants now")
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    message = WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, "ul.messagelist")))
    assert "1 backups queued" in message.text, message.text
    new = set(BackupRecord.objects.filter(schema_name="clinica_demo").values_list("pk", flat=True)) - before
    assert len(new) == 1
    (record_id,) = new
    try:
        # the tenant's backups, from its row in the tenants list
        row = driver.find_element(By.XPATH, "//table[@id='result_list']//tr[th[contains(@class,'field-schema_name')]"
                                            "/a[text()='clinica_demo']]")
        row.find_element(By.LINK_TEXT, "backups").click()
        WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "result_list")))
        assert "clinica_demo" in driver.find_element(By.ID, "changelist-filter").text
        deadline = time.monotonic() + 120
        while True:
            top = _top_row(driver)
            if top.get("id") == str(record_id) and top.get("status_column") in ("Succeeded", "Failed"):
                break
            assert time.monotonic() < deadline, f"backup {record_id} still {top.get('status_column')} after 120 s"
            time.sleep(1)
            driver.refresh()
        assert top["status_column"] == "Succeeded", BackupRecord.objects.get(pk=record_id).error
        assert SIZE.match(top["size_column"]), top
        assert re.match(r"^\d", top["duration_column"]), top
        assert top["progress_column"] == "done" and top["file_column"].endswith("manual · sql · zstd")
        screenshot(driver, "tenant-backups")
        _assert_styled_and_fits(driver)
    finally:
        for record in BackupRecord.objects.filter(pk=record_id):
            if record.status not in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
                backup_record_delete(record=record, actor={"test": "browser"})


def test_api_docs_on_a_tenant_domain(browser, live_server_admin):
    driver = browser
    driver.get(live_server_admin.url("/api/docs/", host="demo.localhost"))
    assert driver.current_url.startswith(f"http://demo.localhost:{live_server_admin.port}/api/docs/")
    html = driver.page_source
    assert "/api/schema/" in html
    # the schema the page renders, fetched by the page itself from its tenant domain
    schema = json.loads(driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/schema/', {headers: {Accept: 'application/json'}}).then(r => r.text()).then(done);"))
    assert {"/api/backups/create/", "/api/backups/history/", "/api/auth/token/"} <= set(schema["paths"])
    local_ui = settings.SPECTACULAR_SETTINGS.get("SWAGGER_UI_DIST") == "SIDECAR"
    if not local_ui:
        warnings.warn("/api/docs/ loads Swagger UI from a CDN in this branch (no drf-spectacular-sidecar): "
                      "only the schema it would render was checked, not the operations on the page.", stacklevel=1)
        screenshot(driver, "api-docs")
        return
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    shown = {el.text for el in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/backups/create/", "/api/backups/history/"} <= {s.replace("\u200b", "") for s in shown}
    screenshot(driver, "api-docs")
