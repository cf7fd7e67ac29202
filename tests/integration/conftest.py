"""Integration fixtures: the real PostgreSQL (django_db_setup and celery_worker are tests/conftest.py's, one per
session for every package), and waiting on records and jobs."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest
from django.db import connection
from django_tenants.utils import get_tenant_model

from backups.models import BackupRecord

DEMO_SCHEMAS = ("clinica_demo", "clinica_sonrisa", "clinica_norte")


@pytest.fixture(autouse=True)
def live_db(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Database access without a wrapping transaction: subprocesses only see committed rows.

    Committed rows outlive a test, so what an earlier test left behind on purpose must not reach this one (the
    suite runs in any order): the connection starts on the public schema, and records left queued without ever
    being sent (held by a lock a test took, say) are closed, since no worker will take them and they would block
    the tenant's next manual backup. Done before the test, once every fixture of the last one (environment
    variables included) is undone."""
    with django_db_blocker.unblock():
        connection.set_schema_to_public()
        BackupRecord.objects.filter(status=BackupRecord.Status.QUEUED, enqueued_at=None).update(
            status=BackupRecord.Status.FAILED, error="Left queued by an earlier test.")
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


def _make_tenants(prefix: str, n: int, *, due_at, migrated: bool = True) -> list:
    """Tenant rows with a bare schema (cheap stand-ins for the dispatcher; they are never dumped)."""
    Tenant = get_tenant_model()
    tenants = Tenant.objects.bulk_create(
        Tenant(schema_name=f"{prefix}{i}", nombre=f"Fake {i}", backup_schedule="daily", backup_time=datetime.time(3, 0),
               backup_timezone="UTC", next_backup_at=due_at)
        for i in range(n)
    )
    with connection.cursor() as cur:
        for t in tenants:
            cur.execute(f"CREATE SCHEMA {t.schema_name}")
            if migrated:
                cur.execute(f"CREATE TABLE {t.schema_name}.django_migrations (id int)")
    return tenants


@pytest.fixture
def fake_tenants():
    made: list = []

    def make(prefix: str, n: int, **kwargs) -> list:
        tenants = _make_tenants(prefix, n, **kwargs)
        made.extend(tenants)
        return tenants

    yield make
    Tenant = get_tenant_model()
    BackupRecord.objects.filter(tenant__in=made).delete()
    with connection.cursor() as cur:
        for t in made:
            cur.execute(f"DROP SCHEMA IF EXISTS {t.schema_name} CASCADE")
    Tenant.objects.filter(pk__in=[t.pk for t in made]).delete()


@pytest.fixture
def ops_client():
    """A Django test client logged into the admin on the public domain as a superuser."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django_tenants.utils import schema_context

    with schema_context("public"):
        User = get_user_model()
        user = User.objects.filter(username="ops-admin-test").first() or User.objects.create_superuser(
            username="ops-admin-test", email="ops@example.com", password="x")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    return client  # the user stays: deleting it cascades into token tables that live only in tenant schemas


@pytest.fixture
def forget_new_backups() -> Iterator[None]:
    """Delete (objects too) every backup record the test made: backups made to fail a restore on purpose, or
    made under odd grants, must not become the tenant's newest good backup for a later test."""
    from backups.catalog.finalize import backup_record_delete

    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield
    for record in BackupRecord.objects.filter(pk__gt=last):
        backup_record_delete(record=record)


@pytest.fixture
def private_broker():
    """A private Redis with the declared queues bound (as a worker's start would), no worker on it."""
    from project.celery import app
    from tests.servers.redis_server import RedisServer

    server = RedisServer.start()
    with app.connection_for_write(server.url) as conn:
        for queue in app.amqp.queues.values():
            queue(conn.default_channel).declare()
    yield server
    server.stop()
