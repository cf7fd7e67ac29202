"""End to end through the real worker: create, history, download, link, delete, 409/429, schedule, restore, audit."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_model
from rest_framework.test import APIClient

from backups.catalog.records import backup_record_create
from backups.core.errors import VerificationFailed
from backups.models import BackupEvent, BackupRecord
from backups.storage import get_storage
from tests.integration.helpers import DEMO_TABLES, table_fingerprints

from .conftest import api_client, wait_for_job, wait_for_status

pytestmark = pytest.mark.worker
CREATE = "/api/backups/create/"


def _create(client, *, query: str = "", **body) -> dict:
    response = client.post(CREATE + query, body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def test_create_history_download_link_delete_audit(admin, api_worker, cleanup):
    created = _create(admin)
    assert created["status"] == "queued" and created["backup_type"] == "manual"
    assert created["file_name"].startswith("backup-sql-clinica_demo-")
    assert created["created_by"] == {"id": 1, "email": "admin@clinica_demo.example", "name": "Dra. Núñez"}
    assert created["links"]["self"] == f"http://demo.localhost/api/backups/history/{created['id']}/"
    assert created["links"]["download"] == f"http://demo.localhost/api/backups/history/{created['id']}/download/"
    record = wait_for_status(created["id"])
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    assert record.task_id

    detail = admin.get(f"/api/backups/history/{record.pk}/").json()
    assert detail["status"] == "succeeded" and detail["stage"] == "done"
    assert detail["plain_size"] == detail["bytes_done"] > detail["file_size"] > 0
    assert detail["sha256"] == record.sha256 and detail["file_size_mb"] == round(record.size / 1e6, 2)

    listed = admin.get("/api/backups/history/").json()
    assert {"count", "next", "previous", "results"} <= set(listed)
    assert listed["results"][0]["id"] == record.pk

    download = admin.get(f"/api/backups/history/{record.pk}/download/")
    assert download.status_code == 200 and download.streaming
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == download["X-Backup-SHA256"] == record.sha256
    assert int(download["Content-Length"]) == len(body) == record.size
    assert download["Content-Disposition"] == f'attachment; filename="{record.file_name}"'

    link = admin.post("/api/backups/cloud/get-url/", {"s3_key": record.storage_key}, format="json")
    assert link.status_code == 200, link.content
    data = link.json()
    assert data["expires_in_seconds"] == 3600 and data["filename"] == record.file_name
    url = urlsplit(data["download_url"])
    assert (url.scheme, url.netloc) == ("http", "demo.localhost")
    fetched = APIClient(HTTP_HOST="demo.localhost").get(url.path)  # no credentials: the signature is the auth
    assert fetched.status_code == 200
    assert b"".join(fetched.streaming_content) == body

    deleted = admin.delete(f"/api/backups/history/{record.pk}/")
    assert deleted.status_code == 200 and "deleted" in deleted.json()["message"]
    assert not BackupRecord.objects.filter(pk=record.pk).exists()
    assert get_storage("local").stat(record.storage_key) is None
    assert get_storage("local").stat(record.storage_key + ".manifest.json") is None
    assert admin.get(f"/api/backups/history/{record.pk}/").status_code == 404

    audit = admin.get("/api/backups/audit/?page_size=10").json()["results"]
    mine = [e for e in audit if e["file_name"] == record.file_name]
    actions = [e["action"] for e in mine]
    assert actions[:4] == ["delete", "download", "link", "download"]  # newest first: link, then its download
    assert {"create", "succeed"} <= set(actions)
    for event in mine:
        if event["action"] in ("create", "delete", "link"):
            assert event["actor"]["id"] == 1 and event["actor"]["email"] == "admin@clinica_demo.example"
            assert event["ip_address"] == "127.0.0.1"
    assert next(e for e in mine if e["action"] == "download" and e["details"]["via"] == "signed_link")["actor"] == {}


def test_create_with_download_answers_the_file(admin, api_worker, cleanup):
    response = admin.post(CREATE + "?download=true", {"format": "dump", "compression": "gzip"}, format="json")
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content)
    assert body[:2] == b"\x1f\x8b"  # gzip
    assert hashlib.sha256(body).hexdigest() == response["X-Backup-SHA256"]
    record = BackupRecord.objects.get(sha256=response["X-Backup-SHA256"])
    assert record.file_name.endswith(".dump.gz") and record.format == "dump"
    assert f'filename="{record.file_name}"' in response["Content-Disposition"]


def test_cloud_only_never_answers_the_file(admin, api_worker, cleanup):
    created = _create(admin, query="?download=true&cloud_only=true")
    assert created["status"] in ("queued", "running", "succeeded")


def test_download_true_answers_202_when_the_backup_is_not_done_in_time(settings, admin, api_worker, cleanup):
    settings.BACKUPS_SYNC_WAIT_SECONDS = 0
    created = _create(admin, query="?download=true")
    assert created["status"] in ("queued", "running")


@pytest.mark.parametrize("query", ["?download=maybe", "?cloud_only=2"])
def test_bad_query_values_are_400(admin, query):
    assert admin.post(CREATE + query, {}, format="json").status_code == 400


@pytest.mark.parametrize("body", [{"format": "tar"}, {"compression": "brotli"}, ["sql"]])
def test_bad_bodies_are_400(admin, body):
    assert admin.post(CREATE, body, format="json").status_code == 400


def test_create_while_a_backup_is_queued_is_409(admin, cleanup):
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    waiting = backup_record_create(schema_name="clinica_demo", tenant=tenant, backup_type=BackupRecord.Type.AUTOMATIC)
    try:
        response = admin.post(CREATE, {}, format="json")
        assert response.status_code == 409
        assert "automatic backup of this tenant is already queued" in response.json()["detail"]
        assert admin.delete(f"/api/backups/history/{waiting.pk}/").status_code == 409
        assert admin.get(f"/api/backups/history/{waiting.pk}/download/").status_code == 409
    finally:
        waiting.delete()


def test_two_creates_at_once_give_one_backup(creds, api_worker, cleanup):
    barrier, statuses = threading.Barrier(4), []

    def create() -> None:
        client = api_client("clinica_demo", f"Token {creds['clinica_demo'].admin_token}")
        try:
            barrier.wait()
            statuses.append(client.post(CREATE, {}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [202, 409, 409, 409]


def test_past_the_hourly_limit_is_429_with_retry_after(settings, admin, cleanup):
    settings.BACKUPS_MANUAL_PER_HOUR = 2
    for _ in range(2):
        done = backup_record_create(schema_name="clinica_demo", backup_type=BackupRecord.Type.MANUAL)
        BackupRecord.objects.filter(pk=done.pk).update(status=BackupRecord.Status.FAILED)
        BackupEvent.objects.filter(record=done, action="create").update(details={"via": "api"})
    response = admin.post(CREATE, {}, format="json")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 3600
    assert "At most 2 manual backups per hour; the next one is allowed at" in response.json()["detail"]


def test_a_damaged_object_never_downloads_cleanly(settings, admin, api_worker, cleanup):
    settings.BACKUPS_STREAM_CHUNK_BYTES = 16 * 1024
    record = wait_for_status(_create(admin)["id"])
    path = get_storage("local").path(record.storage_key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    response = admin.get(f"/api/backups/history/{record.pk}/download/")
    assert response.status_code == 200 and response["X-Backup-SHA256"] == record.sha256
    received = bytearray()
    with pytest.raises(VerificationFailed):
        for chunk in response.streaming_content:
            received += chunk
    assert 0 < len(received) < record.size  # the last chunk is held back: the client sees a short body


def test_schedule_read_change_validate_audit(creds, admin):
    Tenant = get_tenant_model()
    tenant = Tenant.objects.get(schema_name="clinica_demo")
    fields = ("backup_schedule", "backup_time", "backup_weekday", "backup_day_of_month", "backup_timezone",
              "next_scheduled_backup", "backup_keep_daily", "backup_keep_weekly", "backup_keep_monthly")
    original = {name: getattr(tenant, name) for name in fields}
    dentist = api_client("clinica_demo", f"Token {creds['clinica_demo'].dentist_token}")
    try:
        read = dentist.get("/api/backups/schedule/")
        assert read.status_code == 200
        assert set(fields) | {"next_backup_at", "last_backup_at", "backup_overdue_since"} == set(read.json())
        assert read.json()["backup_overdue_since"] is None
        assert dentist.patch("/api/backups/schedule/", {"backup_keep_daily": 3}, format="json").status_code == 403
        Tenant.objects.filter(pk=tenant.pk).update(backup_overdue_since=timezone.now())  # the check found it behind
        assert dentist.get("/api/backups/schedule/").json()["backup_overdue_since"] is not None
        ignored = admin.patch("/api/backups/schedule/", {"backup_overdue_since": None}, format="json")
        assert ignored.status_code == 200 and ignored.json()["backup_overdue_since"] is not None  # read-only
        Tenant.objects.filter(pk=tenant.pk).update(backup_overdue_since=None)

        daily = admin.patch("/api/backups/schedule/", {"backup_schedule": "daily", "backup_time": "03:30",
                                                       "backup_timezone": "Europe/Madrid"}, format="json")
        assert daily.status_code == 200, daily.content
        first = daily.json()["next_backup_at"]
        assert first is not None
        later = admin.patch("/api/backups/schedule/", {"backup_time": "05:45"}, format="json")
        assert later.status_code == 200 and later.json()["next_backup_at"] != first
        assert Tenant.objects.get(pk=tenant.pk).next_backup_at.isoformat().replace("+00:00", "Z") \
            == later.json()["next_backup_at"]

        for body, field in (({"backup_schedule": "weekly", "backup_weekday": None}, "backup_weekday"),
                            ({"backup_timezone": "Mars/Olympus_Mons"}, "backup_timezone"),
                            ({"backup_day_of_month": 31, "backup_schedule": "monthly"}, "backup_day_of_month"),
                            ({"backup_keep_daily": -1}, "backup_keep_daily"),
                            ({"backup_schedule": "hourly"}, "backup_schedule"),
                            ({"backup_time": "25:00"}, "backup_time")):
            bad = admin.patch("/api/backups/schedule/", body, format="json")
            assert bad.status_code == 400, (body, bad.content)
            assert field in bad.json(), (body, bad.json())
        assert Tenant.objects.get(pk=tenant.pk).backup_time.strftime("%H:%M") == "05:45"  # nothing half-applied

        events = BackupEvent.objects.filter(schema_name="clinica_demo", action="schedule_change").order_by("-pk")
        last = events[0]
        assert last.details["before"]["backup_time"] == "03:30:00"
        assert last.details["after"]["backup_time"] == "05:45:00"
        assert last.details["changed"] == ["backup_time", "next_backup_at"]
        assert last.actor["id"] == 1 and last.ip_address == "127.0.0.1"

        put = admin.put("/api/backups/schedule/", {"backup_keep_daily": 9}, format="json")
        assert put.status_code == 200, put.content
        assert put.json()["backup_schedule"] == "disabled" and put.json()["next_backup_at"] is None
        assert put.json()["backup_keep_daily"] == 9
    finally:
        tenant = Tenant.objects.get(pk=tenant.pk)
        for name, value in original.items():
            setattr(tenant, name, value)
        tenant.save()


def _vandalize(schema: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {schema}.clinic_invoice WHERE id % 4 = 0")
        cur.execute(f"UPDATE {schema}.clinic_patient SET nombre = 'Borrado' WHERE id < 50")


def test_restore_and_verify_run_through_the_worker(creds, api_worker, cleanup):
    schema = "clinica_norte"
    client = api_client(schema, f"Bearer {creds[schema].admin_jwt}")
    before = table_fingerprints(schema, DEMO_TABLES)
    record = wait_for_status(_create(client, format="dump")["id"])
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    url = f"/api/backups/history/{record.pk}/restore/"

    assert "confirm" in client.post(url, {}, format="json").json()
    wrong = client.post(url, {"confirm": "clinica_demo"}, format="json")
    assert wrong.status_code == 400 and "clinica_norte" in wrong.json()["confirm"][0]

    _vandalize(schema)
    assert table_fingerprints(schema, DEMO_TABLES) != before
    response = client.post(url, {"confirm": schema}, format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "queued" and job["mode"] == "replace" and job["record_id"] == record.pk
    assert job["links"]["self"] == f"http://norte.localhost/api/backups/restores/{job['id']}/"
    finished = wait_for_job(job["id"])
    assert finished.status == "succeeded", finished.error
    followed = client.get(f"/api/backups/restores/{job['id']}/").json()
    assert followed["status"] == "succeeded" and followed["report"]["ok"] is True
    assert followed["report"]["row_counts"]["clinic_patient"] == {"manifest": 1200, "restored": 1200}
    safety = BackupRecord.objects.get(pk=followed["report"]["safety_record_id"])
    assert safety.backup_type == "pre_restore" and safety.status == "succeeded"
    assert table_fingerprints(schema, DEMO_TABLES) == before  # the data is back as it was

    verify = client.post(f"/api/backups/history/{record.pk}/verify/", {"confirm": schema}, format="json")
    assert verify.status_code == 202, verify.content
    drill = wait_for_job(verify.json()["id"])
    assert drill.status == "succeeded" and drill.report["ok"] is True, drill.error
    listed = client.get("/api/backups/history/?type=pre_restore").json()["results"]
    assert safety.pk in [r["id"] for r in listed]
    actions = [e["action"] for e in client.get("/api/backups/audit/").json()["results"]]
    assert "restore" in actions and "verify" in actions


@pytest.mark.parametrize("query", ["?date_from=2026-13-01", "?date_to=yesterday", "?type=weekly", "?status=done",
                                   "?date_from=2026-02-02&date_to=2026-02-01", "?page=0", "?page=x",
                                   "?page_size=-3"])
def test_bad_history_filters_are_400(admin, query):
    response = admin.get("/api/backups/history/" + query)
    assert response.status_code == 400, (query, response.content)


def test_history_filters(admin, cleanup):
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    records = [backup_record_create(schema_name="clinica_demo", tenant=tenant, backup_type=kind)
               for kind in (BackupRecord.Type.AUTOMATIC, BackupRecord.Type.MANUAL)]
    BackupRecord.objects.filter(pk__in=[r.pk for r in records]).update(status=BackupRecord.Status.FAILED)
    today = records[0].created_at.date().isoformat()
    data = admin.get(f"/api/backups/history/?type=automatic&status=failed&date_from={today}&date_to={today}").json()
    ids = [r["id"] for r in data["results"]]
    assert records[0].pk in ids and records[1].pk not in ids
    assert all(r["backup_type"] == "automatic" and r["status"] == "failed" for r in data["results"])
    assert next(r for r in data["results"] if r["id"] == records[0].pk)["created_by"] is None
    assert admin.get("/api/backups/history/?date_to=2000-01-01").json()["count"] == 0
    page = admin.get("/api/backups/history/?page_size=1").json()
    assert len(page["results"]) == 1 and page["next"] and page["previous"] is None
    assert admin.get("/api/backups/history/?page=999999").status_code == 404


@pytest.mark.worker
def test_deleting_backups_does_not_lift_the_hourly_limit(settings, admin, api_worker, cleanup):
    settings.BACKUPS_MANUAL_PER_HOUR = 1
    BackupEvent.objects.filter(schema_name="clinica_demo", action="create").update(  # earlier tests' creations
        created_at=timezone.now() - timedelta(hours=2))
    record = wait_for_status(_create(admin)["id"])
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    assert admin.delete(f"/api/backups/history/{record.pk}/").status_code in (200, 204)
    assert not BackupRecord.objects.filter(pk=record.pk).exists()
    again = admin.post(CREATE, {}, format="json")
    assert again.status_code == 429, again.content  # creations are counted, not the records left
