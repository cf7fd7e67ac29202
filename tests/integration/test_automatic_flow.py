"""Automatic backups end to end on the real broker, retention on stored objects, and the reaper."""

from datetime import time, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup import enqueue
from backups.backup.run import backup_run
from backups.catalog.finalize import retention_apply
from backups.catalog.records import backup_record_create
from backups.core.errors import TransientBackupError
from backups.housekeeping.reaper import reap_stuck_backups
from backups.models import BackupEvent, BackupRecord
from backups.postgres.locks import DUMP_SLOT_NAMESPACE, lock_key
from backups.postgres.pgtools import connect
from backups.schedule.dispatch import dispatch_due_backups
from backups.storage import get_storage
from tests.identities import prefix

from .conftest import wait_for_record


@pytest.fixture
def daily_clinic():
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    tenant.backup_schedule, tenant.backup_time, tenant.backup_timezone = "daily", time(3, 0), "Europe/Madrid"
    tenant.save()
    yield tenant
    tenant.refresh_from_db()
    tenant.backup_schedule = "disabled"
    tenant.save()


@pytest.mark.worker
def test_worker_runs_the_chain_and_the_tenant_moves_on(celery_worker, daily_clinic):
    now = timezone.now()
    get_tenant_model().objects.filter(pk=daily_clinic.pk).update(next_backup_at=now - timedelta(minutes=1))
    before = daily_clinic.last_backup_at
    (record,) = [r for r in dispatch_due_backups(now=now).records if r.tenant_id == daily_clinic.pk]
    done = wait_for_record(record.pk)
    assert done.status == BackupRecord.Status.SUCCEEDED, done.error
    assert done.backup_type == "automatic" and done.file_name.startswith("auto-sql-clinica_demo-")
    for _ in range(100):  # record_backup is the next link of the chain
        daily_clinic.refresh_from_db()
        if daily_clinic.last_backup_at == done.finished_at:
            break
        __import__("time").sleep(0.1)
    assert daily_clinic.last_backup_at == done.finished_at and daily_clinic.last_backup_at != before
    assert daily_clinic.next_backup_at > now


@pytest.fixture
def all_demo_clinics_daily():
    Tenant = get_tenant_model()
    tenants = list(Tenant.objects.filter(schema_name__in=("clinica_demo", "clinica_sonrisa", "clinica_norte")))
    for tenant in tenants:
        tenant.backup_schedule, tenant.backup_time, tenant.backup_timezone = "daily", time(4, 0), "UTC"
        tenant.save()
    yield tenants
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).update(backup_schedule="disabled", next_backup_at=None)


@pytest.mark.worker
def test_a_large_tick_fans_out_through_batch_tasks_on_the_worker(celery_worker, all_demo_clinics_daily, settings,
                                                                  monkeypatch):
    settings.BACKUPS_FANOUT_BATCH = 2
    settings.BACKUPS_BATCH_SIZE = 1  # batched dumps off: the tick fans out chains (test_batch_backup covers batches)
    batches, direct = [], []
    monkeypatch.setattr(enqueue, "publish_messages", direct.append)  # the tick itself must not send messages
    real_fan_out = enqueue.publish_fan_out
    monkeypatch.setattr(enqueue, "publish_fan_out", lambda b: (batches.extend(b), real_fan_out(b)))
    now = timezone.now()
    get_tenant_model().objects.filter(pk__in=[t.pk for t in all_demo_clinics_daily]).update(
        next_backup_at=now - timedelta(minutes=1))
    records = [r for r in dispatch_due_backups(now=now).records
               if r.tenant_id in {t.pk for t in all_demo_clinics_daily}]
    assert len(records) == 3 and not direct
    assert sorted(len(b) for b in batches) == [1, 2]
    assert sorted(pk for b in batches for pk in b) == sorted(r.pk for r in records)
    for record in records:  # the worker ran fan_out_backups, which sent the chains
        done = wait_for_record(record.pk)
        assert done.status == BackupRecord.Status.SUCCEEDED, done.error
        assert done.enqueued_at is not None


def test_a_redelivered_fan_out_batch_sends_only_records_still_queued(monkeypatch):
    sent = []
    monkeypatch.setattr(enqueue, "publish_messages", sent.extend)
    waiting = backup_record_create(schema_name="clinica_norte", backup_type="automatic")
    finished = backup_record_create(schema_name="clinica_norte", backup_type="automatic")
    BackupRecord.objects.filter(pk=finished.pk).update(status="succeeded")
    assert enqueue.backups_fan_out(record_ids=[waiting.pk, finished.pk, 10**12]) == 1
    (message,) = sent
    assert message.task == "tasks.backups.run_backup" and message.args == (waiting.pk,)
    BackupRecord.objects.filter(pk__in=[waiting.pk, finished.pk]).delete()


@pytest.fixture
def retention_tenant(fake_tenants):
    """A tenant of its own: no other test's records can be its newest backup (the suite runs in any order)."""
    (tenant,) = fake_tenants("retention_", 1, due_at=None)
    return tenant


def test_retention_deletes_objects_and_records_outside_the_policy(retention_tenant):
    tenant = retention_tenant
    get_tenant_model().objects.filter(pk=tenant.pk).update(backup_keep_daily=3, backup_keep_weekly=0,
                                                           backup_keep_monthly=0)
    storage = get_storage()
    base = timezone.now().replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=9)
    created = []
    for day in range(10):
        at = base + timedelta(days=day)
        record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, backup_type="automatic",
                                      at=at, slot=at)
        storage.put_bytes(record.storage_key, b"backup bytes")
        storage.put_bytes(record.storage_key + ".manifest.json", b"{}")
        BackupRecord.objects.filter(pk=record.pk).update(status="succeeded", created_at=at, finished_at=at, size=12,
                                                         sha256="0" * 64)
        created.append(record)
    manual = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, at=base)
    BackupRecord.objects.filter(pk=manual.pk).update(status="succeeded", created_at=base)
    other_auto = BackupRecord.objects.filter(tenant=tenant, backup_type="automatic").exclude(
        pk__in=[r.pk for r in created])
    other_auto.delete()

    deleted = retention_apply(tenant_id=tenant.pk, now=base + timedelta(days=9, hours=2))
    kept = {r.pk for r in created} - set(deleted)
    assert kept == {r.pk for r in created[-3:]}
    assert manual.pk not in deleted and BackupRecord.objects.filter(pk=manual.pk).exists()
    for record in created:
        present = storage.stat(record.storage_key) is not None
        assert present == (record.pk in kept)
        assert (storage.stat(record.storage_key + ".manifest.json") is not None) == present
    BackupRecord.objects.filter(pk__in=kept | {manual.pk}).delete()


def test_retention_deletes_nothing_while_backups_fail(retention_tenant):
    tenant = retention_tenant
    get_tenant_model().objects.filter(pk=tenant.pk).update(backup_keep_daily=1, backup_keep_weekly=0,
                                                           backup_keep_monthly=0)
    BackupRecord.objects.filter(tenant=tenant).delete()
    now = timezone.now()
    ids = []
    for day, status in ((3, "succeeded"), (2, "succeeded"), (1, "failed")):
        at = now - timedelta(days=day)
        record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, backup_type="automatic", at=at,
                                      slot=at)
        BackupRecord.objects.filter(pk=record.pk).update(status=status, created_at=at, finished_at=at)
        ids.append(record.pk)
    assert retention_apply(tenant_id=tenant.pk, now=now) == []
    assert BackupRecord.objects.filter(pk__in=ids).count() == 3
    BackupRecord.objects.filter(pk__in=ids).delete()


def test_safety_backups_expire_through_the_deletion_path_but_never_the_newest(retention_tenant, settings):
    settings.BACKUPS_PRE_RESTORE_RETENTION_DAYS = 14
    tenant = retention_tenant
    storage = get_storage()
    now = timezone.now()
    made = {}
    for name, days, kind in (("old", 30, "pre_restore"), ("older", 20, "pre_restore"),
                             ("newest_safety", 15, "pre_restore"), ("manual", 30, "manual"), ("good", 1, "automatic")):
        at = now - timedelta(days=days)
        record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, backup_type=kind, at=at,
                                      slot=at if kind == "automatic" else None)
        storage.put_bytes(record.storage_key, b"backup bytes")
        storage.put_bytes(record.storage_key + ".manifest.json", b"{}")
        BackupRecord.objects.filter(pk=record.pk).update(status="succeeded", created_at=at, finished_at=at, size=12,
                                                         sha256="0" * 64)
        made[name] = record
    deleted = retention_apply(tenant_id=tenant.pk, now=now)
    assert sorted(deleted) == sorted([made["old"].pk, made["older"].pk])
    for name, record in made.items():
        gone = name in ("old", "older")
        assert BackupRecord.objects.filter(pk=record.pk).exists() is not gone, name
        assert (storage.stat(record.storage_key) is None) is gone, name
        assert (storage.stat(record.storage_key + ".manifest.json") is None) is gone, name
    assert BackupEvent.objects.filter(action="retention", details__storage_key=made["old"].storage_key).exists()
    for record in made.values():
        storage.delete(record.storage_key)
        storage.delete(record.storage_key + ".manifest.json")
    BackupRecord.objects.filter(pk__in=[r.pk for r in made.values()]).delete()


@pytest.mark.worker
def test_reaper_resends_dead_and_lost_work(celery_worker, settings):
    settings.BACKUPS_QUEUED_TIMEOUT_SECONDS = 60
    long_ago = timezone.now() - timedelta(days=1)
    dead = backup_record_create(schema_name="clinica_sonrisa")
    BackupRecord.objects.filter(pk=dead.pk).update(status="running", started_at=long_ago, attempts=1)
    lost = backup_record_create(schema_name="clinica_sonrisa")
    BackupRecord.objects.filter(pk=lost.pk).update(enqueued_at=long_ago)
    result = reap_stuck_backups()
    assert {dead.pk, lost.pk} <= set(result.requeued)
    assert wait_for_record(dead.pk).status == "succeeded"
    assert wait_for_record(lost.pk).status == "succeeded"

    again = backup_record_create(schema_name="clinica_sonrisa")  # its resent message was lost too
    BackupRecord.objects.filter(pk=again.pk).update(enqueued_at=long_ago, stage="requeued")
    assert again.pk in reap_stuck_backups().requeued
    assert wait_for_record(again.pk).status == "succeeded"


@pytest.mark.worker
def test_reaper_gives_up_on_a_record_whose_runs_keep_dying(celery_worker, settings):
    long_ago = timezone.now() - timedelta(days=1)
    doomed = backup_record_create(schema_name="clinica_sonrisa")
    BackupRecord.objects.filter(pk=doomed.pk).update(status="running", started_at=long_ago, attempts=50)
    result = reap_stuck_backups()
    assert doomed.pk in result.failed
    assert "giving up" in BackupRecord.objects.get(pk=doomed.pk).error


def test_dump_slots_cap_concurrent_dumps(settings):
    settings.BACKUPS_MAX_CONCURRENT_DUMPS = 1
    settings.BACKUPS_DUMP_SLOT_WAIT_SECONDS = 0.5
    record = backup_record_create(schema_name="clinica_demo")
    with connect(autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(DUMP_SLOT_NAMESPACE, 0),))
        with pytest.raises(TransientBackupError, match="BACKUPS_MAX_CONCURRENT_DUMPS"):
            backup_run(record_id=record.pk)
    assert BackupRecord.objects.get(pk=record.pk).status == "queued"
    assert backup_run(record_id=record.pk).status == "succeeded"


def test_run_scheduled_backups_prints_what_it_did(daily_clinic, settings):
    settings.BACKUPS_SPREAD_SECONDS = 0
    get_tenant_model().objects.filter(pk=daily_clinic.pk).update(next_backup_at=timezone.now() - timedelta(minutes=1))
    out = StringIO()
    call_command("run_scheduled_backups", stdout=out)
    text = out.getvalue()
    assert text.startswith("Checking for scheduled backups...")
    assert f"Starting backup for {daily_clinic.nombre} (clinica_demo)..." in text
    assert f"Uploaded {prefix('clinica_demo')}auto-sql-clinica_demo-" in text
    assert "1 of 1 scheduled backups done." in text and text.rstrip().endswith("Finished.")
    daily_clinic.refresh_from_db()
    assert daily_clinic.last_backup_at is not None and daily_clinic.next_backup_at > timezone.now()
