"""/metrics on the public domain: behind a bearer token, read from the catalog and the broker at scrape time."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import get_tenant_model

from backups.catalog.records import backup_record_create, backup_record_mark_failed
from backups.catalog.selectors import overdue_tenants
from backups.models import BackupRecord
from backups.ops.broker import KOMBU_PRIORITY_SEP, key_prefix

from .conftest import real_backup
from .helpers import closed_port, scrape, value


def test_metrics_are_off_without_a_token(public_client, settings):
    settings.BACKUPS_METRICS_TOKEN = ""
    assert public_client.get("/metrics").status_code == 404
    assert public_client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


def test_metrics_refuse_missing_and_wrong_credentials(public_client, metrics_token):
    missing = public_client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert b"backups_" not in missing.content
    for header in ("Basic b3BzOm9wcw==", f"Token {metrics_token}", "Bearer", "Bearer "):
        assert public_client.get("/metrics", HTTP_AUTHORIZATION=header).status_code == 401, header
    wrong = public_client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + metrics_token[:-1] + "x")
    assert wrong.status_code == 403 and b"backups_" not in wrong.content
    assert public_client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 405
    assert public_client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 200


def test_metrics_are_served_on_the_public_domain_only(metrics_token):
    from django.test import Client

    tenant_domain = Client(HTTP_HOST="demo.localhost")
    assert tenant_domain.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 404


def test_metrics_after_real_backups(public_client, metrics_token, cleanup):
    good = real_backup("clinica_demo")
    assert good.status == BackupRecord.Status.SUCCEEDED
    sonrisa = real_backup("clinica_sonrisa")
    assert sonrisa.status == BackupRecord.Status.SUCCEEDED
    tenant = get_tenant_model().objects.get(schema_name="clinica_sonrisa")
    for error in ("pg_dump: error: connection to server lost", "No space left on the device"):
        failed = backup_record_create(schema_name="clinica_sonrisa", tenant=tenant)
        backup_record_mark_failed(record=failed, error=error)
    queued = backup_record_create(schema_name="clinica_norte")  # never sent: stays queued

    metrics = scrape(public_client, metrics_token)

    assert value(metrics, "backups_catalog_up") == 1 and value(metrics, "backups_broker_up") == 1
    good.refresh_from_db()
    assert value(metrics, "backups_last_success_timestamp_seconds", tenant="clinica_demo") == pytest.approx(
        good.finished_at.timestamp())
    assert value(metrics, "backups_last_success_duration_seconds", tenant="clinica_demo") == pytest.approx(
        good.duration_seconds)
    assert value(metrics, "backups_last_success_size_bytes", tenant="clinica_demo") == good.size > 0
    assert value(metrics, "backups_consecutive_failures", tenant="clinica_demo") == 0
    # sonrisa: its newest success is the one above, and two failures came after it
    assert value(metrics, "backups_last_success_size_bytes", tenant="clinica_sonrisa") == sonrisa.size
    assert value(metrics, "backups_consecutive_failures", tenant="clinica_sonrisa") == 2
    assert value(metrics, "backups_failures_24h", tenant="clinica_sonrisa") >= 2
    assert value(metrics, "backups_last_success_timestamp_seconds", tenant="public") is None

    queued_now = BackupRecord.objects.filter(status="queued").count()
    assert queued_now >= 1 and queued.status == "queued"
    assert value(metrics, "backups_in_progress", kind="backup", status="queued") == queued_now
    from backups.models import RestoreJob

    assert value(metrics, "backups_in_progress", kind="verify", status="running") == RestoreJob.objects.filter(
        mode=RestoreJob.Mode.VERIFY, status="running").count()

    expected = {"stalled": 0, "failing": 0, "stuck": 0}
    for item in overdue_tenants():
        expected[item.reason] += 1
    for reason, n in expected.items():
        assert value(metrics, "backups_overdue_tenants", reason=reason) == n
    tenants = get_tenant_model().objects.exclude(schema_name="public").count()
    assert value(metrics, "backups_tenants", schedule="enabled") + value(
        metrics, "backups_tenants", schedule="disabled") == tenants
    reported = [dict(labels)["queue"] for name, labels in metrics if name == "backups_queue_messages"]
    assert len(reported) == len(set(reported))
    reported = set(reported)
    assert reported == {queue.name for queue in django_settings.CELERY_TASK_QUEUES}  # every queue, each once


def test_queue_depths_count_every_priority_of_the_broker_lists(public_client, metrics_token, settings):
    settings.BACKUPS_METRICS_QUEUES = ("ops-test.idle", "ops-test.empty")
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    plain, urgent = key_prefix() + "ops-test.idle", key_prefix() + "ops-test.idle" + KOMBU_PRIORITY_SEP + "9"
    assert key_prefix(), "the tests run with their own CELERY_QUEUE_PREFIX"
    try:
        client.rpush(plain, "a", "b", "c")
        client.rpush(urgent, "d")
        metrics = scrape(public_client, metrics_token)
    finally:
        client.delete(plain, urgent)
    assert value(metrics, "backups_queue_messages", queue="ops-test.idle") == 4
    assert value(metrics, "backups_queue_messages", queue="ops-test.empty") == 0
    assert value(metrics, "backups_broker_unacked_messages") is not None


def test_a_dead_broker_still_gives_the_catalog_figures(public_client, metrics_token, settings):
    with closed_port() as port:
        settings.BACKUPS_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        metrics = scrape(public_client, metrics_token)
    assert value(metrics, "backups_broker_up") == 0
    assert value(metrics, "backups_catalog_up") == 1
    scheduled = get_tenant_model().objects.exclude(schema_name="public").exclude(backup_schedule="disabled").count()
    assert value(metrics, "backups_tenants", schedule="enabled") == scheduled
    assert not any(name == "backups_queue_messages" for name, _ in metrics)


def test_a_scrape_costs_the_same_queries_for_3_or_300_tenants(public_client, metrics_token, cleanup):
    """Aggregates and one LATERAL statement: the number of queries does not grow with the fleet."""
    from backups.ops.metrics import render

    Tenant = get_tenant_model()

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            render()
        return len(ctx.captured_queries)

    before = queries()
    made = Tenant.objects.bulk_create(Tenant(schema_name=f"obs_fleet_{i}", nombre=f"Fleet {i}") for i in range(300))
    try:
        for tenant in made[:20]:
            record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant)
            backup_record_mark_failed(record=record, error="boom")
        assert queries() == before
        metrics = scrape(public_client, metrics_token)
        assert value(metrics, "backups_consecutive_failures", tenant="obs_fleet_0") == 1
        assert value(metrics, "backups_consecutive_failures", tenant="obs_fleet_299") == 0
    finally:
        BackupRecord.objects.filter(tenant__in=made).delete()
        Tenant.objects.filter(pk__in=[t.pk for t in made]).delete()
