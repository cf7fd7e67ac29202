"""Restores and drills are limited like backups: per tenant per hour (429, Retry-After), and a restore of a backup
the catalog knows is damaged is refused at once (409), never accepted as a job the worker can only fail."""

from __future__ import annotations

import pytest
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.records import backup_event_create, backup_record_create
from backups.models import BackupEvent, BackupRecord, RestoreJob

from .conftest import api_client

SCHEMA = "clinica_sonrisa"


@pytest.fixture
def good_record(cleanup) -> BackupRecord:
    """A succeeded backup with a digest (never run: every request here is refused before a job exists)."""
    tenant = get_tenant_model().objects.get(schema_name=SCHEMA)
    record = backup_record_create(schema_name=SCHEMA, tenant=tenant)
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.SUCCEEDED, sha256="ab" * 32, size=10,
                                                     finished_at=timezone.now())
    record.refresh_from_db()
    return record


@pytest.fixture
def sonrisa_admin(creds):
    return api_client(SCHEMA, f"Token {creds[SCHEMA].admin_token}")


@pytest.mark.parametrize(("path", "action", "setting", "what"), [
    ("restore", BackupEvent.Action.RESTORE, "BACKUPS_RESTORES_PER_HOUR", "restores"),
    ("verify", BackupEvent.Action.VERIFY, "BACKUPS_VERIFIES_PER_HOUR", "verify drills"),
])
def test_past_the_hourly_limit_restores_and_drills_are_429_with_retry_after(settings, sonrisa_admin, good_record,
                                                                            path, action, setting, what):
    setattr(settings, setting, 2)
    jobs_before = RestoreJob.objects.count()
    for _ in range(2):  # two requests this hour, as the API records them
        backup_event_create(record=good_record, action=action, details={"stage": "requested", "via": "api"})
    response = sonrisa_admin.post(f"/api/backups/history/{good_record.pk}/{path}/", {"confirm": SCHEMA},
                                  format="json")
    assert response.status_code == 429, response.content
    assert 3500 <= int(response["Retry-After"]) <= 3600
    assert f"At most 2 {what} per hour; the next one is allowed at" in response.json()["detail"]
    assert RestoreJob.objects.count() == jobs_before
    other = "verify" if path == "restore" else "restore"  # each kind has its own count: the other one is not limited
    setattr(settings, "BACKUPS_VERIFIES_PER_HOUR" if other == "verify" else "BACKUPS_RESTORES_PER_HOUR", 0)
    refused = sonrisa_admin.post(f"/api/backups/history/{good_record.pk}/{other}/", {"confirm": SCHEMA},
                                 format="json")
    assert refused.status_code == 429 and "turned off" in refused.json()["detail"]


@pytest.mark.parametrize("damage", ["damaged", "no_digest"])
@pytest.mark.parametrize("path", ["restore", "verify"])
def test_a_damaged_backup_is_refused_at_once(sonrisa_admin, good_record, damage, path):
    if damage == "damaged":  # a download, drill or restore found its bytes changed
        BackupRecord.objects.filter(pk=good_record.pk).update(damaged_at=timezone.now(), error="SHA-256 mismatch")
    else:
        BackupRecord.objects.filter(pk=good_record.pk).update(sha256="")
    jobs_before = RestoreJob.objects.count()
    response = sonrisa_admin.post(f"/api/backups/history/{good_record.pk}/{path}/", {"confirm": SCHEMA},
                                  format="json")
    assert response.status_code == 409, response.content
    detail = response.json()["detail"]
    assert f"Backup {good_record.pk}" in detail
    assert ("marked damaged" in detail) if damage == "damaged" else ("no recorded SHA-256" in detail)
    assert RestoreJob.objects.count() == jobs_before
