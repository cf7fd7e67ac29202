"""Restore jobs never stay `queued` or `running` for ever: a dead worker's job and a lost message are sent again by
the reaper, and whatever a restore raises (a dropped connection, a full spool, a bug) ends as a failed job with
its message, a failed scheduled drill mailing ops."""

from __future__ import annotations

import errno
from datetime import timedelta

import psycopg
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core import mail
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_delete
from backups.catalog.records import backup_record_create
from backups.core.errors import BackupError
from backups.housekeeping import restore_reaper as restore_reaper_module
from backups.housekeeping.broker_scan import restore_job_ids_in_broker
from backups.housekeeping.reaper import reap_stuck_backups
from backups.models import BackupRecord, RestoreJob
from backups.postgres import pgtools
from backups.postgres.locks import lock_key
from backups.restore import jobs as api_restore
from backups.restore.drills import SCHEDULER
from backups.restore.jobs import RESTORE_JOB_NAMESPACE, restore_job_run
from backups.tasks import restore_backup
from project.celery import app
from tasks.queues import RESTORE

from .conftest import wait_for_job

SCHEMA = "clinica_sonrisa"
ADMIN = {"id": 1, "email": "admin@example.com", "name": "Admin"}


@pytest.fixture(autouse=True)
def no_other_unfinished_jobs(settings):
    """Jobs an earlier test left unfinished would block this tenant's jobs (and be reaped here): closed first.
    The jobs this test makes are deleted after it."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    RestoreJob.objects.filter(status__in=("queued", "running")).update(status="failed",
                                                                       error="Left unfinished by an earlier test.")
    last = RestoreJob.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    mail.outbox.clear()
    yield
    RestoreJob.objects.filter(pk__gt=last).delete()


@pytest.fixture
def backed_up():
    """A fresh successful backup of the tenant (a real restore runs from it); deleted with its object after."""
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA).pk)
    assert record.status == "succeeded", record.error
    yield record
    backup_record_delete(record=BackupRecord.objects.get(pk=record.pk))


@pytest.fixture
def a_record():
    """A record a faked restore is asked for (never read)."""
    record = backup_record_create(schema_name=SCHEMA)
    BackupRecord.objects.filter(pk=record.pk).update(status="failed", error="Made by a test.")
    yield record
    BackupRecord.objects.filter(pk=record.pk).delete()


def _job(record: BackupRecord | None, *, mode: str = "verify", status: str = "queued", ago: float = 0,
         requested_by: dict | None = None, report: dict | None = None) -> RestoreJob:
    """A job as the API or the drill scheduler makes it, created (and, when running, started) `ago` seconds ago."""
    tenant = get_tenant_model().objects.get(schema_name=SCHEMA)
    job = RestoreJob.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=SCHEMA, record=record,
                                    mode=mode, requested_by=requested_by or ADMIN, report=report or {})
    when = timezone.now() - timedelta(seconds=ago)
    RestoreJob.objects.filter(pk=job.pk).update(status=status, created_at=when,
                                                started_at=when if status == "running" else None)
    job.refresh_from_db()
    return job


def _fake_restore(monkeypatch, name: str, behaviour) -> list[dict]:
    """Replace api_restore's restore_verify or restore_replace by `behaviour(**kwargs)`; returns the calls' kwargs."""
    calls: list[dict] = []

    def fake(**kwargs):
        calls.append(kwargs)
        return behaviour(**kwargs)

    monkeypatch.setattr(api_restore, name, fake)
    return calls


# --- jobs a dead worker left running ------------------------------------------------------------------------

@pytest.mark.worker
def test_a_job_left_running_by_a_dead_worker_is_sent_again_and_runs_to_completion(backed_up, celery_worker,
                                                                                    settings):
    job = _job(backed_up, status="running", ago=settings.BACKUPS_ORPHAN_GRACE_SECONDS + 60)
    holder = pgtools.connect(autocommit=True)  # a live worker holding the job: never touched, however old
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(RESTORE_JOB_NAMESPACE, job.pk),))
    try:
        assert job.pk not in reap_stuck_backups().requeued_restore_jobs
        assert RestoreJob.objects.get(pk=job.pk).status == "running"
    finally:
        holder.close()  # the worker dies: the server frees its lock

    result = reap_stuck_backups()
    assert result.requeued_restore_jobs == [job.pk] and result.failed_restore_jobs == []
    done = wait_for_job(job.pk)
    assert done.status == "succeeded", done.error
    assert done.report["row_counts"]["clinic_patient"]["restored"] == 1200
    assert done.report["requeued"]["left_running"] == 1
    assert "left running by a worker that stopped" in done.report["requeued"]["why"]


def test_a_job_left_running_a_second_time_fails_giving_up_and_a_drill_alerts(settings):
    report = {"requeued": {"at": (timezone.now() - timedelta(hours=1)).isoformat(), "why": "x", "left_running": 1}}
    job = _job(None, status="running", ago=settings.BACKUPS_ORPHAN_GRACE_SECONDS + 60, requested_by=SCHEDULER,
               report=report)
    result = reap_stuck_backups(broker_url=None)
    assert result.failed_restore_jobs == [job.pk] and job.pk not in result.requeued_restore_jobs
    job.refresh_from_db()
    assert job.status == "failed" and job.finished_at is not None
    assert "left running by a worker that stopped" in job.error and job.error.endswith("giving up.")
    assert [m.subject for m in mail.outbox] == [f"[tenant-backups] Verify drill failed for {SCHEMA}"]
    assert reap_stuck_backups(broker_url=None).failed_restore_jobs == []  # failed once, then left alone


# --- lost broker messages -----------------------------------------------------------------------------------

def test_a_queued_job_whose_message_was_lost_is_resent_once_and_a_waiting_one_never(private_broker, settings,
                                                                                     monkeypatch, a_record):
    sent: list[int] = []
    monkeypatch.setattr(restore_reaper_module, "restore_jobs_send", sent.extend)
    ago = settings.BACKUPS_LOST_MESSAGE_SECONDS + 60
    lost, waiting = _job(a_record, ago=ago), _job(a_record, ago=ago)
    fresh = _job(a_record)  # its message may still be on its way (sent after commit)
    with app.connection_for_write(private_broker.url) as conn:
        restore_backup.apply_async((waiting.pk,), connection=conn, queue=RESTORE)
    assert restore_job_ids_in_broker(url=private_broker.url) == {waiting.pk}
    for _ in range(3):  # however many passes: the lost job is sent once, the waiting and the fresh ones never
        reap_stuck_backups(broker_url=private_broker.url)
    assert sent == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == "queued" and lost.report["requeued"]["lost"] == 1
    assert RestoreJob.objects.get(pk=waiting.pk).report == {} and RestoreJob.objects.get(pk=fresh.pk).report == {}


@pytest.mark.worker
def test_a_lost_message_is_resent_on_the_real_broker_and_the_job_runs(backed_up, celery_worker, settings):
    job = _job(backed_up, ago=settings.BACKUPS_LOST_MESSAGE_SECONDS + 60)  # its message never reached a queue
    assert job.pk in reap_stuck_backups().requeued_restore_jobs
    done = wait_for_job(job.pk)
    assert done.status == "succeeded", done.error
    assert done.report["requeued"]["lost"] == 1


# --- every exception ends as a failed job with its message ---------------------------------------------------

def test_a_connection_broken_under_the_restore_fails_the_job_through_a_fresh_connection(monkeypatch, a_record):
    """The restore kills Django's own backend (as a server restart does) and raises from it."""
    def kill_own_backend(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    _fake_restore(monkeypatch, "restore_verify", kill_own_backend)
    job = _job(a_record)
    done = restore_job_run(job_id=job.pk)
    assert done.status == "failed"
    stored = RestoreJob.objects.get(pk=job.pk)
    assert stored.status == "failed" and stored.finished_at is not None
    assert stored.error.startswith("OperationalError:") and "terminat" in stored.error


def test_a_server_restart_during_a_restore_is_written_as_the_restores_own_message(monkeypatch, a_record):
    """The issue's case: the restore's own connections fail (BackupError) and Django's is dead too, unnoticed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        django_pid = cursor.fetchone()[0]

    def restart(**kwargs):
        with pgtools.connect(autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (django_pid,))
        raise BackupError("The restore failed: server closed the connection unexpectedly.")

    _fake_restore(monkeypatch, "restore_verify", restart)
    job = _job(a_record)
    restore_job_run(job_id=job.pk)
    stored = RestoreJob.objects.get(pk=job.pk)
    assert stored.status == "failed"
    assert stored.error == "The restore failed: server closed the connection unexpectedly."
    assert stored.report["message"] == stored.error


def test_an_os_error_is_a_clear_message_and_only_an_interrupt_goes_up(monkeypatch, a_record):
    def full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/spool/restore-1.sql")

    _fake_restore(monkeypatch, "restore_verify", full)
    job = _job(a_record)
    done = restore_job_run(job_id=job.pk)
    assert done.status == "failed"
    assert done.error.startswith("The restore's spool") and "/spool/restore-1.sql" in done.error
    assert done.error.endswith(": No space left on device.")

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    _fake_restore(monkeypatch, "restore_verify", interrupted)
    job = _job(a_record)
    with pytest.raises(KeyboardInterrupt):
        restore_job_run(job_id=job.pk)
    stored = RestoreJob.objects.get(pk=job.pk)
    assert stored.status == "failed" and stored.error == "KeyboardInterrupt"


def test_an_unexpected_exception_in_a_scheduled_drill_fails_it_and_alerts(monkeypatch, a_record):
    def bug(**kwargs):
        raise ValueError("Cannot convert NaN to Decimal")

    _fake_restore(monkeypatch, "restore_verify", bug)
    job = _job(a_record, requested_by=SCHEDULER)
    done = restore_job_run(job_id=job.pk)
    assert done.status == "failed" and done.error == "ValueError: Cannot convert NaN to Decimal"
    assert [m.subject for m in mail.outbox] == [f"[tenant-backups] Verify drill failed for {SCHEMA}"]
    assert done.error in mail.outbox[0].body


def test_a_soft_time_limit_in_the_task_says_how_long_it_took(monkeypatch, a_record, settings):
    def too_long(**kwargs):
        raise SoftTimeLimitExceeded()

    _fake_restore(monkeypatch, "restore_verify", too_long)
    job = _job(a_record, requested_by=SCHEDULER)
    assert restore_backup.apply(args=(job.pk,)).get() == "failed"
    stored = RestoreJob.objects.get(pk=job.pk)
    assert stored.status == "failed"
    assert stored.error == f"The restore took longer than {settings.BACKUPS_DUMP_SOFT_TIME_LIMIT} s."
    assert [m.subject for m in mail.outbox] == [f"[tenant-backups] Verify drill failed for {SCHEMA}"]


# --- a replace's safety backup is kept on the job and reused by a retried attempt ------------------------------

def test_a_replace_keeps_its_safety_backup_on_the_job_and_a_retry_reuses_it(monkeypatch, a_record):
    seen: list = []

    def fails_after_the_safety_backup(*, on_safety, safety_record_id, **kwargs):
        on_safety(safety_record_id or 4242)
        seen.append(RestoreJob.objects.get(pk=job.pk).report.get("safety_record_id"))  # written at once
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    calls = _fake_restore(monkeypatch, "restore_replace", fails_after_the_safety_backup)
    job = _job(a_record, mode="replace")
    done = restore_job_run(job_id=job.pk)
    assert calls[0]["safety_record_id"] is None and seen == [4242]
    assert done.status == "failed" and "server closed the connection" in done.error
    assert RestoreJob.objects.get(pk=job.pk).report["safety_record_id"] == 4242

    job = _job(a_record, mode="replace", status="running", report={"safety_record_id": 4242})  # a retried attempt
    restore_job_run(job_id=job.pk)
    assert calls[1]["safety_record_id"] == 4242
