"""Scheduled verify drills: the tenants drilled longest ago get their newest backup restored in a scratch database."""

import uuid
from pathlib import Path

import pytest
from django.core import mail
from django_tenants.utils import get_tenant_model

from backups import conf
from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_delete
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord, RestoreJob
from backups.restore.drills import drill_candidates, drills_schedule
from backups.restore.jobs import restore_job_run

from .conftest import DEMO_SCHEMAS


@pytest.fixture
def backed_up(settings):
    """One fresh successful backup of each demo clinic; no earlier drills; removed afterwards."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    RestoreJob.objects.all().delete()
    Tenant = get_tenant_model()
    records = {}
    for schema in DEMO_SCHEMAS:
        record = backup_record_create(schema_name=schema, tenant=Tenant.objects.get(schema_name=schema))
        records[schema] = backup_run(record_id=record.pk)
        assert records[schema].status == "succeeded", records[schema].error
    yield records
    RestoreJob.objects.all().delete()
    for record in BackupRecord.objects.filter(pk__in=[r.pk for r in records.values()]):
        backup_record_delete(record=record)  # the objects too: a later same-second backup must not find them


def _pending_drills(monkeypatch) -> list:
    """Keep the jobs' messages from the broker: these tests run them here, synchronously."""
    sent: list = []
    from backups.tasks import restore_backup

    monkeypatch.setattr(restore_backup, "apply_async", lambda args, kwargs=None, **kw: sent.append(args[0]))
    return sent


def test_drills_go_to_the_tenants_drilled_longest_ago_and_pass(backed_up, monkeypatch):
    sent = _pending_drills(monkeypatch)
    first = drills_schedule(sample=2)
    assert [j.schema_name for j in first] == sorted(DEMO_SCHEMAS)[:2]  # never drilled: by name
    assert sent == [j.pk for j in first]
    for job in first:
        assert job.mode == "verify" and job.requested_by["scheduler"] and job.record_id == backed_up[job.schema_name].pk
        done = restore_job_run(job_id=job.pk)
        assert done.status == "succeeded", done.error
        assert done.report["row_counts"]["clinic_patient"]["restored"] == 1200
    (second,) = drills_schedule(sample=1)  # the one not drilled yet comes next
    assert second.schema_name == sorted(DEMO_SCHEMAS)[2]
    assert len(drills_schedule(sample=5)) == 2  # the third's drill is still queued: not picked twice
    assert not mail.outbox


@pytest.mark.worker
def test_scheduled_drills_run_on_the_real_worker_and_pass(backed_up, celery_worker):
    from .conftest import wait_for_job

    jobs = drills_schedule(sample=3)
    assert {j.schema_name for j in jobs} == set(DEMO_SCHEMAS)
    for job in jobs:
        done = wait_for_job(job.pk)
        assert done.status == "succeeded", done.error
        assert done.started_at is not None  # a worker took it: nothing here ran it
        counts = done.report["row_counts"]["clinic_patient"]
        assert counts["restored"] == counts["manifest"] == 1200


def test_a_failed_drill_is_mailed_to_ops(backed_up, monkeypatch):
    _pending_drills(monkeypatch)
    mail.outbox.clear()
    damaged = backed_up["clinica_norte"]
    path = Path(conf.local_root()) / damaged.storage_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    jobs = {j.schema_name: j for j in drills_schedule(sample=3)}
    done = restore_job_run(job_id=jobs["clinica_norte"].pk)
    assert done.status == "failed" and done.error
    subjects = [m.subject for m in mail.outbox]
    assert subjects == [f"[tenant-backups] Backup {damaged.file_name} of clinica_norte is damaged",
                        "[tenant-backups] Verify drill failed for clinica_norte"]
    assert done.error in mail.outbox[1].body
    damaged.refresh_from_db()
    assert damaged.damaged_at is not None  # never drilled or restored again
    assert restore_job_run(job_id=jobs["clinica_demo"].pk).status == "succeeded"
    assert len(mail.outbox) == 2  # passing drills say nothing


def test_tenants_without_a_successful_backup_are_not_drilled(backed_up, fake_tenants):
    (never_ok,) = fake_tenants("drill_", 1, due_at=None)
    failed = backup_record_create(schema_name=never_ok.schema_name, tenant=never_ok)
    BackupRecord.objects.filter(pk=failed.pk).update(status="failed")
    candidates = drill_candidates(sample=100)
    assert never_ok.pk not in {tenant_id for tenant_id, _, _ in candidates}
    assert {schema for _, schema, _ in candidates} >= set(DEMO_SCHEMAS)
    for _, _, record_id in candidates:
        assert BackupRecord.objects.get(pk=record_id).status == "succeeded"


def test_a_queued_job_of_a_deleted_tenant_does_not_hide_the_others(backed_up):
    RestoreJob.objects.create(tenant=None, tenant_uid=uuid.uuid4(), schema_name="clinica_gone",  # tenant deleted
                              mode="verify")
    assert {schema for _, schema, _ in drill_candidates(sample=10)} >= set(DEMO_SCHEMAS)
