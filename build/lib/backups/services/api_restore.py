"""Restores asked for through the API: a RestoreJob row, run once by the `restore_backup` task."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.errors import BackupError
from backups.locks import claim_unfinished
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.queues import RESTORE_BACKUP, signature

from .api_backups import ACTIVE, _as_id
from .api_errors import ConflictError, InvalidInput, NotFoundError
from .drills import drill_report_failure
from .records import backup_event_create
from .restore import RestoreReport, restore_replace, restore_verify

logger = logging.getLogger(__name__)

RESTORE_JOB_NAMESPACE = 0x7472  # one restore job is run by one worker at a time
FINISHED = (RestoreJob.Status.SUCCEEDED, RestoreJob.Status.FAILED)


def api_restore_request(*, tenant: Any, record: BackupRecord, mode: str, confirm: str, actor: dict,
                        ip_address: str | None) -> RestoreJob:
    """A queued RestoreJob for the record, sent to the worker once this transaction commits.

    `confirm` must repeat the tenant's schema name. Refused (409) while the record is not a finished
    success, or while another restore (or, for a replace, a backup) of the tenant is queued or running.
    """
    if mode not in RestoreJob.Mode.values:
        raise InvalidInput(f"Unknown mode {mode!r}.", field="mode")
    if confirm != tenant.schema_name:
        raise InvalidInput(f"Type this tenant's schema name ({tenant.schema_name}) in 'confirm' to go ahead.",
                           field="confirm")
    Tenant = get_tenant_model()
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        record = BackupRecord.objects.filter(pk=record.pk, tenant_uid=locked.tenant_uid).first()
        if record is None:
            raise NotFoundError("No backup with this id.")
        if record.status != BackupRecord.Status.SUCCEEDED:
            raise ConflictError(f"Backup {record.pk} is {record.status}; only a succeeded backup can be restored.")
        job = RestoreJob.objects.filter(tenant_uid=locked.tenant_uid, status__in=ACTIVE).first()
        if job is not None:
            raise ConflictError(f"A {job.mode} of this tenant is already {job.status} (restore job {job.pk}).")
        if mode == RestoreJob.Mode.REPLACE:
            running = BackupRecord.objects.filter(tenant_uid=locked.tenant_uid, status__in=ACTIVE).first()
            if running is not None:
                raise ConflictError(f"Backup {running.pk} of this tenant is {running.status}; restore once it "
                                    f"finishes.")
        job = RestoreJob.objects.create(tenant=locked, tenant_uid=locked.tenant_uid, schema_name=locked.schema_name,
                                        record=record, mode=mode,
                                        requested_by=actor)
        action = BackupEvent.Action.RESTORE if mode == RestoreJob.Mode.REPLACE else BackupEvent.Action.VERIFY
        backup_event_create(record=record, action=action, actor=actor, ip_address=ip_address,
                            details={"job_id": job.pk, "stage": "requested"})

        job_pk = job.pk

        def send() -> None:
            signature(RESTORE_BACKUP, job_pk).apply_async()

        transaction.on_commit(send)
    return job


def api_restore_job_get(*, tenant: Any, job_id: Any) -> RestoreJob:
    """One restore job of the tenant; NotFoundError for any other id."""
    pk = _as_id(job_id)
    job = (RestoreJob.objects.filter(pk=pk, tenant_uid=tenant.tenant_uid).select_related("record").first()
           if pk else None)
    if job is None:
        raise NotFoundError("No restore job with this id.")
    return job


def report_as_json(report: RestoreReport) -> dict:
    """A RestoreReport as the job's JSON report."""
    data = dataclasses.asdict(report)
    data["row_counts"] = {table: {"manifest": counts[0], "restored": counts[1]}
                          for table, counts in report.row_counts.items()}
    data["mismatches"] = sorted(report.mismatches)
    return data


def _finish(job: RestoreJob, *, ok: bool, report: dict, error: str = "") -> RestoreJob:
    job.status = RestoreJob.Status.SUCCEEDED if ok else RestoreJob.Status.FAILED
    job.report = report
    job.error = error[:10000]
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "report", "error", "finished_at"])
    return job


def restore_job_run(*, job_id: int, task_id: str = "") -> RestoreJob | None:
    """Run a queued job once: a finished job does nothing, a job another live worker holds is left to it."""
    with claim_unfinished(RestoreJob, job_id, namespace=RESTORE_JOB_NAMESPACE, finished=FINISHED) as (job, claimed):
        if not claimed:
            return job
        job.status, job.started_at, job.task_id = RestoreJob.Status.RUNNING, timezone.now(), task_id
        job.save(update_fields=["status", "started_at", "task_id"])
        record = job.record
        if record is None:
            return _finish(job, ok=False, report={}, error="The backup was deleted before the restore could run.")
        run = restore_replace if job.mode == RestoreJob.Mode.REPLACE else restore_verify
        try:
            report = run(schema=job.schema_name, record=record, actor=job.requested_by)
        except BackupError as exc:
            logger.warning("restore job %s (%s of %s) failed: %s", job.pk, job.mode, job.schema_name, exc)
            job = _finish(job, ok=False, report={"message": str(exc)}, error=str(exc))
        except BaseException as exc:
            _finish(job, ok=False, report={"message": str(exc)}, error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            job = _finish(job, ok=report.ok, report=report_as_json(report),
                          error="" if report.ok else report.message)
    drill_report_failure(job)
    return job
