"""Errors the client cannot cause but must still get as JSON: storage failures, and the task's idempotence."""

from __future__ import annotations

import pytest
from django_tenants.utils import get_tenant_model

from backups.models import BackupRecord, RestoreJob
from backups.services.api_backups import api_backup_create
from backups.storage import StorageError, StorageTransientError
from tasks.backups import restore_backup
from tasks.queues import DUMP_PRIORITY
from tests.servers.moto_s3 import free_port


class BrokenStorage:
    """A storage whose every call fails the given way."""

    name = "s3"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise self.error
        return fail


@pytest.mark.parametrize(("error", "status"), [(StorageTransientError("timeout talking to S3"), 503),
                                               (StorageError("AccessDenied on bucket secret-bucket"), 502)])
def test_storage_failures_are_502_or_503_json(error, status, admin, monkeypatch):
    import backups.api.views.cloud as views

    monkeypatch.setattr(views, "get_storage", lambda *a: BrokenStorage(error))
    response = admin.get("/api/backups/cloud/list/")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert "backup storage" in response.json()["detail"]
    assert b"secret-bucket" not in response.content  # the storage's own message stays in the logs
    if status == 503:
        assert response["Retry-After"] == "60"


def test_an_unreachable_s3_server_is_503(settings, admin):
    settings.BACKUPS_STORAGE = "s3"
    settings.AWS_STORAGE_BUCKET_NAME = "nowhere"
    settings.AWS_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.AWS_S3_MAX_ATTEMPTS = 1
    settings.AWS_S3_CONNECT_TIMEOUT = 2
    response = admin.get("/api/backups/cloud/list/")
    assert response.status_code == 503, response.content
    assert response.json()["detail"]


def test_manual_backups_go_to_the_priority_queue(admin, monkeypatch):
    import backups.services.enqueue as enqueue

    sent = []
    monkeypatch.setattr(enqueue, "publish_chains", sent.extend)
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = api_backup_create(tenant=tenant, actor={"id": 1}, ip_address="127.0.0.1")
    try:
        assert len(sent) == 1
        assert sent[0].tasks[0].options["queue"] == DUMP_PRIORITY
        assert sent[0].tasks[0].args == (record.pk,)
    finally:
        record.delete()


def test_restore_task_is_idempotent_on_its_job():
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    job = RestoreJob.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name="clinica_demo",
                                     mode="verify", status="succeeded",
                                    report={"ok": True})
    try:
        assert restore_backup.apply(args=[job.pk]).get() == "succeeded"  # finished: nothing runs again
        job.refresh_from_db()
        assert job.report == {"ok": True} and job.started_at is None
        assert restore_backup.apply(args=[10**12]).get() == "missing"
        orphan = RestoreJob.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name="clinica_demo",
                                           mode="verify")
        assert restore_backup.apply(args=[orphan.pk]).get() == "failed"  # its backup is gone
        orphan.refresh_from_db()
        assert "deleted" in orphan.error and orphan.finished_at
        orphan.delete()
    finally:
        job.delete()


def test_records_keep_their_schema_when_listed(admin):
    assert not BackupRecord.objects.filter(schema_name="clinica_demo").exclude(
        storage_key__startswith="clinica_demo/").exists()
