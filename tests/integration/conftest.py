"""Integration fixtures: the real PostgreSQL (django_db_setup and celery_worker are tests/conftest.py's, one per
session for every package), and waiting on records and jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.db import connection

from backups.models import BackupRecord

DEMO_SCHEMAS = ("clinica_demo", "clinica_sonrisa", "clinica_norte")


@pytest.fixture(autouse=True)
def live_db(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Database access without a wrapping transaction: subprocesses only see committed rows.

    Committed rows outlive the test, so what a test leaves behind on purpose must not reach the next one (the
    suite runs in any order): the connection goes back to the public schema, and a record the test left
    queued without ever sending it (held by a lock the test took, say) is closed, since no worker will take it
    and it would block the tenant's next manual backup."""
    with django_db_blocker.unblock():
        last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        try:
            yield
        finally:
            connection.set_schema_to_public()
            BackupRecord.objects.filter(pk__gt=last, status=BackupRecord.Status.QUEUED, enqueued_at=None).update(
                status=BackupRecord.Status.FAILED, error="Left queued by a test.")


def wait_for_job(job_id: int, *, timeout: float = 180.0):
    """Poll until the restore job succeeded or failed."""
    from backups.models import RestoreJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = RestoreJob.objects.get(pk=job_id)
        if job.status in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"restore job {job_id} still {job.status} after {timeout} s")


def wait_for_record(record_id: int, *, timeout: float = 60.0) -> BackupRecord:
    """Poll until the record is succeeded or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = BackupRecord.objects.get(pk=record_id)
        if record.status in (BackupRecord.Status.SUCCEEDED, BackupRecord.Status.FAILED):
            return record
        time.sleep(0.1)
    raise AssertionError(f"record {record_id} still {record.status} after {timeout} s")
