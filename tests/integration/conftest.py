"""Integration fixtures: the real PostgreSQL (django_db_setup and celery_worker are tests/conftest.py's, one per
session for every package), and waiting on records and jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from backups.models import BackupRecord

DEMO_SCHEMAS = ("clinica_demo", "clinica_sonrisa", "clinica_norte")


@pytest.fixture(autouse=True)
def live_db(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Database access without a wrapping transaction: subprocesses only see committed rows."""
    with django_db_blocker.unblock():
        yield


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
