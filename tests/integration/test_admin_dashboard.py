"""The backups admin as ops read it: readable columns, no public tenant, and the fleet dashboard."""

from __future__ import annotations

import re
from datetime import timedelta

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.admin import fleet as dashboard
from backups.models import BackupRecord

from .helpers import catalog_record

DASHBOARD = "/admin/backups/backuprecord/dashboard/"


def test_fleet_status_counts_tenants_by_their_newest_finished_backup(fake_tenants):
    before = dashboard.fleet_status()
    ok, bad, busy, fresh = fake_tenants("dash_st_", 4, due_at=timezone.now() + timedelta(days=1))
    catalog_record(ok, "failed", minutes_ago=120)
    catalog_record(ok, "succeeded", minutes_ago=60)       # recovered: counts as succeeded
    catalog_record(bad, "succeeded", minutes_ago=120)
    catalog_record(bad, "failed", minutes_ago=30)         # newest finished failed
    catalog_record(busy, "succeeded", minutes_ago=120)
    catalog_record(busy, "running", minutes_ago=0)        # running now; its last finished one succeeded
    catalog_record(fresh, "queued")                       # never finished one
    after = dashboard.fleet_status()
    assert after.tenants - before.tenants == 4
    assert (after.succeeded - before.succeeded, after.failed - before.failed, after.never - before.never) == (2, 1, 1)
    assert (after.running - before.running, after.queued - before.queued) == (1, 1)
    assert after.last_24h["succeeded"] - before.last_24h["succeeded"] == 3
    assert after.last_24h["failed"] - before.last_24h["failed"] == 2


def test_dashboard_page_shows_status_trends_and_failures_without_the_network(ops_client, fake_tenants):
    (tenant,) = fake_tenants("dash_pg_", 1, due_at=timezone.now() + timedelta(days=1))
    catalog_record(tenant, "succeeded", minutes_ago=600, seconds=4, size=2_000_000)
    catalog_record(tenant, "succeeded", minutes_ago=300, seconds=6, size=3_500_000)
    failed = catalog_record(tenant, "failed", minutes_ago=20, error="pg_dump: error: connection to server lost")
    response = ops_client.get(DASHBOARD, {"tenant": tenant.schema_name, "days": 7})
    assert response.status_code == 200
    html = response.content.decode()
    for tile in ("succeeded", "failed", "overdue", "running"):
        assert f'data-tile="{tile}"' in html
    failures = html.split('id="failures"', 1)[1].split('id="running"', 1)[0]
    assert tenant.schema_name in failures and f"#{failed.pk}" in failures and "connection to server lost" in failures
    detail = html.split('id="tenant-detail"', 1)[1].split("</div>\n      </div>", 1)[0]
    assert detail.count("<svg") == 2 and "3.50 MB" in detail and "6.00 s" in detail
    assert html.count("<svg") >= 5
    # nothing is fetched from another host: no external script, stylesheet or image
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def test_dashboard_reaches_from_the_admin_index_and_needs_a_login(ops_client):
    index = ops_client.get("/admin/").content.decode()
    assert DASHBOARD in index
    assert DASHBOARD in ops_client.get("/admin/backups/").content.decode()
    assert DASHBOARD in ops_client.get("/admin/backups/backuprecord/").content.decode()
    anonymous = Client(HTTP_HOST="localhost").get(DASHBOARD)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")


def test_dashboard_queries_do_not_grow_with_the_number_of_tenants(ops_client, fake_tenants):
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert ops_client.get(DASHBOARD).status_code == 200
        return len(ctx.captured_queries)

    few = fake_tenants("dash_q_a_", 2, due_at=timezone.now() + timedelta(days=1))
    for t in few:
        catalog_record(t, "succeeded", minutes_ago=100)
    first = count()
    many = fake_tenants("dash_q_b_", 40, due_at=timezone.now() + timedelta(days=1))
    for t in many:
        catalog_record(t, "succeeded", minutes_ago=100)
        catalog_record(t, "failed", minutes_ago=50)
    assert count() == first


def test_backups_list_is_readable(ops_client, fake_tenants):
    (tenant,) = fake_tenants("dash_ls_", 1, due_at=timezone.now() + timedelta(days=1))
    done = catalog_record(tenant, "succeeded", minutes_ago=5, seconds=75)
    running = catalog_record(tenant, "running", minutes_ago=0, seconds=30, stage="dumping", bytes_done=500_000)
    response = ops_client.get("/admin/backups/backuprecord/", {"tenant": tenant.pk})
    html = response.content.decode()
    assert [r.pk for r in response.context["cl"].result_list] == [running.pk, done.pk]
    row = html.split(f">{done.pk}</a>", 1)[1].split("</tr>", 1)[0]
    assert "1.53 MB" in row and "1529651" not in row.replace('title="1,529,651 bytes"', "")
    assert "1 min 15 s" in row and "Succeeded" in row
    row = html.split(f">{running.pk}</a>", 1)[1].split("</tr>", 1)[0]
    # progress: the estimate is the tenant's last good backup's raw size (none here: the schema's size)
    assert "dumping" in row and "so far" in row
    # the chosen tenant is named in the filter, and the storage filter speaks words
    assert f">{tenant.schema_name}</a>" in html.split('id="changelist-filter"', 1)[1]
    assert "Local folder" in html and "Damaged (failed its check)" in html


def test_tenants_list_leaves_out_the_public_tenant(ops_client):
    response = ops_client.get("/admin/tenants/clinica/", {"q": ""})
    schemas = [t.schema_name for t in response.context["cl"].queryset]
    assert "public" not in schemas and "clinica_demo" in schemas
    public = get_tenant_model().objects.get(schema_name="public")
    response = ops_client.post("/admin/tenants/clinica/", {"action": "back_up_now", "_selected_action": [public.pk]},
                        follow=True)
    assert not BackupRecord.objects.filter(schema_name="public").exists()
    html = ops_client.get("/admin/tenants/clinica/").content.decode()
    assert "/admin/backups/backuprecord/?tenant=" in html and "Public (operators)" not in html


def test_a_tenant_that_is_no_schema_name_is_a_400_not_an_error(ops_client):
    for bad in ("\x00", "a\x00b", "x" * 64, 'a"b'):
        response = ops_client.get(DASHBOARD, {"tenant": bad})
        assert response.status_code == 400, (bad, response.status_code)
    assert ops_client.get(DASHBOARD, {"tenant": "no_such_tenant"}).status_code == 200
