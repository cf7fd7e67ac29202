"""The app's Celery tasks: load by id, call one service, own the retry policy.

Found by the standard `app.autodiscover_tasks()`; their names (backups.queues) are wire names, and
services send work by name, so nothing below the tasks imports them.
"""

from __future__ import annotations

import logging
import sys

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init
from django_tenants.utils import get_public_schema_name, schema_context

from backups.backup.batch.run import batch_backup_run
from backups.backup.enqueue import backups_fan_out, backups_send_alone
from backups.backup.run import backup_run, describe_error
from backups.catalog.faults import backup_next_retry
from backups.catalog.finalize import backup_record_finalize, deleted_tenant_backups_purge, retention_apply
from backups.catalog.progress import estimated_total, progress_listener
from backups.catalog.records import backup_record_fail_unfinished, backup_record_mark_failed
from backups.conf import backups_settings
from backups.core.errors import BackupError, TransientBackupError
from backups.housekeeping.reaper import reap_stuck_backups as reap_service
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupRecord
from backups.ops.checks import check_configuration
from backups.ops.overdue import overdue_check
from backups.postgres.leftovers import leftovers_remove
from backups.restore.drills import drills_schedule
from backups.schedule.dispatch import dispatch_due_backups as dispatch_service
from backups.storage import StorageError, StorageTransientError

logger = logging.getLogger(__name__)


def progress_events(task, record_id: int | None = None):
    """A progress listener sending `task-progress` events: Flower shows the task as PROGRESS with bytes done,
    the estimated total and percent (the admin, the API and the CLI read the same progress from the record)."""
    record = BackupRecord.objects.filter(pk=record_id).first() if record_id else None
    total = estimated_total(record) if record is not None else None

    def send(rid: int, bytes_done: int) -> None:
        fields = {"record_id": rid, "bytes_done": bytes_done}
        if total and rid == record_id:
            fields.update(estimated_total=total, percent=round(min(99.0, 100.0 * bytes_done / total), 1))
        task.send_event("task-progress", **fields)

    return send


# What every task that dumps or restores shares: acknowledged when done, back on the queue if its worker dies,
# and the dump time limits (soft < hard < the broker's visibility timeout).
LONG_RUNNING = {"acks_late": True, "reject_on_worker_lost": True,
                "soft_time_limit": backups_settings.BACKUPS_DUMP_SOFT_TIME_LIMIT,
                "time_limit": backups_settings.BACKUPS_DUMP_TIME_LIMIT}


@worker_init.connect
def check_configuration_on_start(**kwargs) -> None:
    """Stop the worker at once when a backup setting is wrong (bucket, credentials, age recipients).

    What dead processes left (spool files, scratch databases) is removed first, so the spool's free-space check
    counts only what live processes use."""
    leftovers_remove()
    try:
        check_configuration()
    except (BackupError, StorageError) as exc:
        print(f"tenant-backups cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@shared_task(
    bind=True,
    name="tasks.backups.run_backup",
    **LONG_RUNNING,
    max_retries=backups_settings.BACKUPS_TASK_MAX_RETRIES,
    default_retry_delay=backups_settings.BACKUPS_TASK_RETRY_DELAY,
    ignore_result=True,
)
def run_backup(self, record_id: int, **kwargs) -> str:
    """Dump, compress and store one record's backup (stages of one streaming task)."""
    with schema_context(get_public_schema_name()):
        try:
            with progress_listener(progress_events(self, record_id)):
                record = backup_run(record_id=record_id, task_id=self.request.id or "")
        except TransientBackupError as exc:
            delay = backup_next_retry(record_id=record_id, retries=self.request.retries, error=str(exc))
            if delay is None:
                return "failed"
            raise self.retry(exc=exc, countdown=delay, max_retries=self.request.retries + 1) from exc
        except SoftTimeLimitExceeded:  # a run that reached its dump already wrote this failure: written once
            backup_record_fail_unfinished(record_id=record_id, error=describe_error(SoftTimeLimitExceeded()))
            return "failed"
    return record.status if record else "missing"


@shared_task(
    bind=True,
    name="tasks.backups.run_backup_batch",
    **LONG_RUNNING,
    ignore_result=True,
)
def run_backup_batch(self, record_ids: list[int] | None = None, **kwargs) -> dict:
    """Back up several due tenants from one pg_dump; members that must be retried are sent again, alone."""
    ids = list(record_ids or [])
    with schema_context(get_public_schema_name()):
        try:
            with progress_listener(progress_events(self)):
                result = batch_backup_run(record_ids=ids, task_id=self.request.id or "")
        except SoftTimeLimitExceeded:
            for record in BackupRecord.objects.filter(pk__in=ids, status=BackupRecord.Status.RUNNING):
                limit = backups_settings.BACKUPS_DUMP_SOFT_TIME_LIMIT
                backup_record_mark_failed(record=record, error=f"The batch took longer than {limit} s.")
            return {"failed": len(ids)}
        if result.retry:
            backups_send_alone(record_ids=result.retry)
    return {"succeeded": len(result.succeeded), "failed": len(result.failed), "retry": len(result.retry),
            "skipped": len(result.skipped)}


@shared_task(name="tasks.backups.backup_public_schema", **LONG_RUNNING, ignore_result=True)
def backup_public_schema(**kwargs) -> str:
    """Beat's entry: back up the shared tables when BACKUPS_PUBLIC_BACKUP_SECONDS passed since the last one."""
    from backups.backup.public import public_backup_if_due

    with schema_context(get_public_schema_name()):
        try:
            record = public_backup_if_due()
        except TransientBackupError:
            return "retry"  # the record went back to queued: the reaper sends it again (run_backup)
    return record.status if record else "not due"


@shared_task(name="tasks.backups.record_backup", acks_late=True, ignore_result=True)
def record_backup(record_id: int, **kwargs) -> None:
    """Second link of the chain: move the tenant's last_backup_at."""
    with schema_context(get_public_schema_name()):
        backup_record_finalize(record_id=record_id)


@shared_task(name="tasks.backups.apply_retention", acks_late=True, ignore_result=True,
             autoretry_for=(StorageTransientError,), retry_backoff=True, max_retries=3)
def apply_retention(tenant_id: int, **kwargs) -> int:
    """Last link: delete what the tenant's retention policy no longer keeps."""
    with schema_context(get_public_schema_name()):
        return len(retention_apply(tenant_id=tenant_id))


@shared_task(name="tasks.backups.dispatch_due_backups", ignore_result=True)
def dispatch_due_backups(**kwargs) -> int:
    """Beat's tick: claim due tenants and fan out one chain each."""
    with schema_context(get_public_schema_name()):
        return len(dispatch_service(now=None).created)


@shared_task(name="tasks.backups.fan_out_backups", acks_late=True, ignore_result=True)
def fan_out_backups(record_ids: list[int] | None = None, **kwargs) -> int:
    """Send one chain per record of a batch the tick created (a redelivery skips records no longer queued)."""
    with schema_context(get_public_schema_name()):
        return backups_fan_out(record_ids=list(record_ids or []))


@shared_task(name="tasks.backups.reap_stuck_backups", ignore_result=True)
def reap_stuck_backups(**kwargs) -> dict:
    """Housekeeping: resend work left by dead workers or lost messages."""
    with schema_context(get_public_schema_name()):
        result = reap_service()
    return {"requeued": result.requeued, "failed": result.failed, "aborted_uploads": result.aborted_uploads,
            "requeued_restore_jobs": result.requeued_restore_jobs, "failed_restore_jobs": result.failed_restore_jobs}


@shared_task(name="tasks.backups.check_overdue_backups", ignore_result=True)
def check_overdue_backups(**kwargs) -> int:
    """Housekeeping: tell ops which tenants' automatic backups fell behind (and which caught up)."""
    with schema_context(get_public_schema_name()):
        return len(overdue_check().overdue)


@shared_task(name="tasks.backups.reconcile_storage", ignore_result=True,
             autoretry_for=(StorageTransientError,), retry_backoff=True, max_retries=3)
def reconcile_storage(**kwargs) -> dict:
    """Housekeeping: records whose object is gone fail; objects whose record is gone are rebuilt from manifests."""
    with schema_context(get_public_schema_name()):
        result = storage_reconcile()
        purged = deleted_tenant_backups_purge()
    return {"missing": len(result.missing), "imported": len(result.imported), "unknown": len(result.unknown),
            "rejected": len(result.rejected), "duplicates": len(result.duplicates), "purged": len(purged)}


@shared_task(name="tasks.backups.schedule_verify_drills", ignore_result=True)
def schedule_verify_drills(**kwargs) -> int:
    """Housekeeping: restore a sample of tenants' newest backups into scratch databases (restore_backup)."""
    with schema_context(get_public_schema_name()):
        return len(drills_schedule())


@shared_task(
    bind=True,
    name="tasks.backups.restore_backup",
    **LONG_RUNNING,
    ignore_result=True,
)
def restore_backup(self, job_id: int, **kwargs) -> str:
    """Run one RestoreJob (replace or verify drill); a finished job does nothing, so a redelivery is harmless."""
    from backups.restore.jobs import restore_failure_message, restore_job_fail_unfinished, restore_job_run

    with schema_context(get_public_schema_name()):
        try:
            job = restore_job_run(job_id=job_id, task_id=self.request.id or "")
        except SoftTimeLimitExceeded as exc:  # the restore's own limit is written by restore_job_run; this is the
            # limit reached while claiming the job or writing its outcome
            restore_job_fail_unfinished(job_id=job_id, error=restore_failure_message(exc))
            return "failed"
    return job.status if job else "missing"
