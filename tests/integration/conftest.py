"""Integration fixtures: the real PostgreSQL, Redis and one real Celery worker per session."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.management import call_command

from backups.models import BackupRecord
from tests.identities import give_fixed_identities
from tests.workers import running_worker

DEMO_SCHEMAS = ("clinica_demo", "clinica_sonrisa", "clinica_norte")


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker) -> None:
    """Use the database `make test` created (not a test_ copy): pg_dump and workers must see it too."""
    name = settings.DATABASES["default"]["NAME"]
    if not name.endswith("_test"):
        pytest.exit(f"Refusing to run against database {name!r}: run the suite with `make test`.", returncode=2)
    with django_db_blocker.unblock():
        call_command("migrate_schemas", shared=True, verbosity=0, interactive=False)
        call_command("create_demo_clinics", quiet=True, patients=1200)
        give_fixed_identities()


@pytest.fixture(autouse=True)
def live_db(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Database access without a wrapping transaction: subprocesses only see committed rows."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, s3_server):
    """The session's one real worker on the real broker (every package uses it, so the suite runs in any
    order); it also knows the session's S3 server. Stopped by pid at the end."""
    from tests.s3env import reset_bucket, s3_env

    reset_bucket(s3_server)
    with running_worker(name="tests", log_name="test-worker.log", extra_env=s3_env(s3_server)) as proc:
        yield proc


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
