"""The app's Celery tasks: load by id, call one service, own the retry policy.

Found by the standard `app.autodiscover_tasks()`; their names (backups.queues) are wire names, and
services send work by name, so nothing below the tasks imports them.
"""

from __future__ import annotations

import functools
import logging
import sys

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init
from django_tenants.utils import get_public_schema_name, schema_context

from backups.backup.batch.run import batch_backup_run
from backups.backup.copy import backup_copies_retry
from backups.backup.enqueue import backups_fan_out, backups_send_alone
from backups.backup.run import describe_error
from backups.catalog.faults import backup_next_retry
from backups.catalog.finalize import backup_record_finalize, deleted_tenant_backups_purge, retention_apply
from backups.catalog.progress import estimated_total, progress_listener
from backups.catalog.records import backup_record_fail_unfinished, backup_record_mark_failed
from backups.conf import backups_settings
from backups.core.errors import BackupError, TransientBackupError
from backups.housekeeping.erasure import expired_tenants_erase
from backups.housekeeping.reaper import reap_stuck_backups as reap_service
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupRecord
from backups.ops.checks import check_configuration
from backups.ops.overdue import overdue_check
from backups.postgres.leftovers import leftovers_remove
from backups.queues import (
    APPLY_RETENTION,
    BACKUP_PUBLIC,
    CHECK_OVERDUE,
    DISPATCH_DUE,
    EXPIRE_SIDE_COPIES,
    FAN_OUT,
    REAP_STUCK,
    RECONCILE,
    RECORD_BACKUP,
    RESTORE_BACKUP,
    RUN_BACKUP,
    RUN_BACKUP_BATCH,
    VERIFY_DRILLS,
)
from backups.restore.drills import drills_schedule
from backups.restore.side import side_copies_expire
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


def public_task(*args, **options):
    """`shared_task` whose body runs in the public schema, where the catalog and the tenants live (a worker thread
    may have been left in a tenant's schema, and tenant_schemas_celery switches to the sender's). A wrapper, not a
    base class: the host's Celery app keeps its own task class (tenant_schemas_celery's TenantTask here)."""

    def register(run):
        @functools.wraps(run)
        def in_public_schema(*call_args, **call_kwargs):
            with schema_context(get_public_schema_name()):
                return run(*call_args, **call_kwargs)

        return shared_task(*args, **options)(in_public_schema)

    return register


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


@public_task(
    bind=True,
    name=RUN_BACKUP,
    **LONG_RUNNING,
    max_retries=backups_settings.BACKUPS_TASK_MAX_RETRIES,
    default_retry_delay=backups_settings.BACKUPS_TASK_RETRY_DELAY,
    ignore_result=True,
)
def run_backup(self, record_id: int, **kwargs) -> str:
    """Back up one record: the pipeline's batch of one (dump, artifact, record, after-success), retried here
    with backoff when it failed for a cause that goes away."""
    try:
        with progress_listener(progress_events(self, record_id)):
            result = batch_backup_run(record_ids=[record_id], task_id=self.request.id or "")
    except SoftTimeLimitExceeded:  # a run that reached its dump already wrote this failure: written once
        backup_record_fail_unfinished(record_id=record_id, error=describe_error(SoftTimeLimitExceeded()))
        return "failed"
    if result.retry:
        error = result.errors.get(record_id, "")
        delay = backup_next_retry(record_id=record_id, retries=self.request.retries, error=error)
        if delay is None:
            return "failed"
        exc = TransientBackupError(error)
        raise self.retry(exc=exc, countdown=delay, max_retries=self.request.retries + 1) from exc
    record = BackupRecord.objects.filter(pk=record_id).only("status").first()
    return record.status if record else "missing"


@public_task(
    bind=True,
    name=RUN_BACKUP_BATCH,
    **LONG_RUNNING,
    ignore_result=True,
)
def run_backup_batch(self, record_ids: list[int] | None = None, **kwargs) -> dict:
    """Back up several due tenants from one pg_dump; members that must be retried are sent again, alone."""
    ids = list(record_ids or [])
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


@public_task(name=BACKUP_PUBLIC, **LONG_RUNNING, ignore_result=True)
def backup_public_schema(**kwargs) -> str:
    """Beat's entry: back up the shared tables when BACKUPS_PUBLIC_BACKUP_SECONDS passed since the last one."""
    from backups.backup.public import public_backup_if_due

    try:
        record = public_backup_if_due()
    except TransientBackupError:
        return "retry"  # the record went back to queued: the reaper sends it again (run_backup)
    return record.status if record else "not due"


@public_task(name=RECORD_BACKUP, acks_late=True, ignore_result=True)
def record_backup(record_id: int, **kwargs) -> None:
    """Kept for one release for chains sent before run_backup did its after-success in process: moves the tenant's
    last_backup_at (again: forward only, so a second time changes nothing)."""
    backup_record_finalize(record_id=record_id)


@public_task(name=APPLY_RETENTION, acks_late=True, ignore_result=True,
             autoretry_for=(StorageTransientError,), retry_backoff=True, max_retries=3)
def apply_retention(tenant_id: int, **kwargs) -> int:
    """Delete what the tenant's retention policy no longer keeps (sent by chains of the previous release, and
    callable on its own)."""
    return len(retention_apply(tenant_id=tenant_id))


@public_task(name=DISPATCH_DUE, ignore_result=True)
def dispatch_due_backups(**kwargs) -> int:
    """Beat's tick: claim due tenants and fan out one chain each."""
    return len(dispatch_service(now=None).created)


@public_task(name=FAN_OUT, acks_late=True, ignore_result=True)
def fan_out_backups(record_ids: list[int] | None = None, **kwargs) -> int:
    """Send one chain per record of a batch the tick created (a redelivery skips records no longer queued)."""
    return backups_fan_out(record_ids=list(record_ids or []))


@public_task(name=REAP_STUCK, ignore_result=True)
def reap_stuck_backups(**kwargs) -> dict:
    """Housekeeping: resend work left by dead workers or lost messages."""
    result = reap_service()
    copies = backup_copies_retry()  # failed copies to the second target, tried again until the last attempt
    return {"requeued": result.requeued, "failed": result.failed, "aborted_uploads": result.aborted_uploads,
            "requeued_restore_jobs": result.requeued_restore_jobs, "failed_restore_jobs": result.failed_restore_jobs,
            "copies_retried": copies["copied"] + copies["failed"], "copies_copied": copies["copied"]}


@public_task(name=CHECK_OVERDUE, ignore_result=True)
def check_overdue_backups(**kwargs) -> int:
    """Housekeeping: tell ops which tenants' automatic backups fell behind (and which caught up)."""
    return len(overdue_check().overdue)


@public_task(name=RECONCILE, ignore_result=True,
             autoretry_for=(StorageTransientError,), retry_backoff=True, max_retries=3)
def reconcile_storage(**kwargs) -> dict:
    """Housekeeping: records whose object is gone fail; objects whose record is gone are rebuilt from manifests."""
    result = storage_reconcile()
    erased = expired_tenants_erase()  # a deleted tenant's keep period ended: its backups and data keys go
    purged = deleted_tenant_backups_purge()
    return {"missing": len(result.missing), "imported": len(result.imported), "unknown": len(result.unknown),
            "rejected": len(result.rejected), "duplicates": len(result.duplicates), "purged": len(purged),
            "erased_tenants": len(erased)}


@public_task(name=VERIFY_DRILLS, ignore_result=True)
def schedule_verify_drills(**kwargs) -> int:
    """Housekeeping: restore a sample of tenants' newest backups into scratch databases (restore_backup)."""
    return len(drills_schedule())


@public_task(name=EXPIRE_SIDE_COPIES, ignore_result=True)
def expire_side_copies(**kwargs) -> int:
    """Housekeeping: drop the side copies (restore_tenant --into) older than BACKUPS_SIDE_COPY_KEEP_DAYS."""
    return len(side_copies_expire())


@public_task(
    bind=True,
    name=RESTORE_BACKUP,
    **LONG_RUNNING,
    ignore_result=True,
)
def restore_backup(self, job_id: int, **kwargs) -> str:
    """Run one RestoreJob (replace, verify drill or objects restore); a finished job does nothing, so a redelivery
    is harmless."""
    from backups.restore.jobs import restore_failure_message, restore_job_fail_unfinished, restore_job_run

    try:
        job = restore_job_run(job_id=job_id, task_id=self.request.id or "")
    except SoftTimeLimitExceeded as exc:  # the restore's own limit is written by restore_job_run; this is the
        # limit reached while claiming the job or writing its outcome
        restore_job_fail_unfinished(job_id=job_id, error=restore_failure_message(exc))
        return "failed"
    return job.status if job else "missing"
