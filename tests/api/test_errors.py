"""Errors the client cannot cause but must still get as JSON: storage failures, and the task's idempotence."""

from __future__ import annotations

import time

import pytest
from django_tenants.utils import get_tenant_model

from backups.backup.on_demand import api_backup_create
from backups.models import BackupRecord, RestoreJob
from backups.storage import StorageError, StorageTransientError
from backups.tasks import restore_backup
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


@pytest.mark.worker
def test_manual_backups_go_to_the_priority_queue(admin, api_worker):
    """The message really lands on the priority queue: the worker stops consuming it, the test reads Redis."""
    import json as jsonlib

    import redis
    from django.conf import settings

    from project.celery import app

    from .conftest import wait_for_status

    key = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] + DUMP_PRIORITY
    client = redis.Redis.from_url(settings.REDIS_URL)
    assert app.control.cancel_consumer(DUMP_PRIORITY, reply=True, timeout=5)
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = None
    try:
        record = api_backup_create(tenant=tenant, actor={"id": 1}, ip_address="127.0.0.1")
        deadline = time.monotonic() + 10
        waiting: list = []
        while time.monotonic() < deadline and not waiting:
            waiting = [jsonlib.loads(m) for m in client.lrange(key, 0, -1)]
            time.sleep(0.05)
        assert [m["headers"]["task"] for m in waiting] == ["tasks.backups.run_backup"]
        assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.QUEUED
    finally:
        assert app.control.add_consumer(DUMP_PRIORITY, reply=True, timeout=5)
    assert wait_for_status(record.pk).status == BackupRecord.Status.SUCCEEDED
    assert client.llen(key) == 0
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


def test_records_keep_their_schema_and_identity_when_listed(admin, creds):
    from backups.catalog.records import backup_record_create
    from backups.core.naming import tenant_prefix

    from .conftest import api_client

    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = backup_record_create(schema_name="clinica_demo", tenant=tenant)
    try:
        listed = {r["id"]: r for r in admin.get("/api/backups/history/?status=queued").json()["results"]}
        assert listed[record.pk]["file_name"] == record.file_name and "-clinica_demo-" in record.file_name
        assert record.storage_key.startswith(tenant_prefix("clinica_demo", tenant.tenant_uid))
        other = api_client("clinica_sonrisa", f"Token {creds['clinica_sonrisa'].admin_token}")
        assert record.pk not in {r["id"] for r in other.get("/api/backups/history/").json()["results"]}
    finally:
        record.delete()
