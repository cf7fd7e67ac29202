"""Restores asked for through the API: a RestoreJob row, run once by the `restore_backup` task."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.on_demand import _as_id, api_hourly_limit_check
from backups.catalog.faults import write_through_fresh_connection
from backups.catalog.records import backup_event_create
from backups.conf import backups_settings
from backups.core.errors import BackupError
from backups.core.service_errors import ConflictError, InvalidInput, NotFoundError
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.postgres.locks import claim_unfinished
from backups.queues import RESTORE_BACKUP, signature
from backups.restore.drills import drill_report_failure
from backups.restore.objects import ObjectsRefused, ObjectsReport, parse_pks, resolve_model, restore_objects
from backups.restore.run import RestoreReport, restore_replace, restore_verify
from backups.storage.spools import spool_dir

logger = logging.getLogger(__name__)

RESTORE_JOB_NAMESPACE = 0x7472  # one restore job is run by one worker at a time
HOURLY_LIMITS = {RestoreJob.Mode.REPLACE: ("BACKUPS_RESTORES_PER_HOUR", "restores"),
                 RestoreJob.Mode.VERIFY: ("BACKUPS_VERIFIES_PER_HOUR", "verify drills")}


def _locked_tenant_and_record(tenant: Any, record: BackupRecord) -> tuple[Any, BackupRecord]:
    """In the caller's transaction: the tenant row locked (one restore request at a time), and the record read
    again as this tenant identity's, refused (409) when a worker would refuse it."""
    locked = get_tenant_model().objects.select_for_update().get(pk=tenant.pk)
    found = BackupRecord.objects.filter(pk=record.pk, tenant_uid=locked.tenant_uid).first()
    if found is None:
        raise NotFoundError("No backup with this id.")
    refusal = api_restore_refusal(record=found)
    if refusal:
        raise ConflictError(refusal)
    return locked, found


def api_restore_refusal(*, record: BackupRecord) -> str | None:
    """Why the worker would refuse this record, as far as the catalog tells, or None: the API answers it at
    once (409) instead of a 202 for a job that can only fail (backups.restore.run.checked_record)."""
    if record.status != BackupRecord.Status.SUCCEEDED:
        return f"Backup {record.pk} is {record.status}; only a succeeded backup can be restored."
    if record.damaged_at is not None:
        return (f"Backup {record.pk} failed its checksum on {record.damaged_at:%Y-%m-%d %H:%M} UTC and is marked "
                "damaged; it is never restored or verified. Choose another backup.")
    if not record.sha256 or len(record.sha256) != 64 or record.size is None:
        return (f"Backup {record.pk} has no recorded SHA-256 and size, so its stored bytes cannot be checked; "
                "it is never restored or verified.")
    if record.stage == BackupRecord.Stage.DELETING:
        return f"Backup {record.pk} is being deleted."
    return None


def api_restore_request(*, tenant: Any, record: BackupRecord, mode: str, confirm: str, actor: dict,
                        ip_address: str | None) -> RestoreJob:
    """A queued RestoreJob for the record, sent to the worker once this transaction commits.

    `confirm` must repeat the tenant's schema name. Refused (409) while the record is not a finished,
    undamaged success with a digest, or while another restore (or, for a replace, a backup) of the tenant is
    queued or running; 429 past the tenant's hourly number of restores or drills.
    """
    if mode not in HOURLY_LIMITS:
        raise InvalidInput(f"Unknown mode {mode!r}.", field="mode")
    if confirm != tenant.schema_name:
        raise InvalidInput(f"Type this tenant's schema name ({tenant.schema_name}) in 'confirm' to go ahead.",
                           field="confirm")
    action = BackupEvent.Action.RESTORE if mode == RestoreJob.Mode.REPLACE else BackupEvent.Action.VERIFY
    with transaction.atomic():
        locked, record = _locked_tenant_and_record(tenant, record)
        setting, what = HOURLY_LIMITS[mode]
        api_hourly_limit_check(tenant=locked, now=timezone.now(), action=action, setting=setting, what=what)
        job = RestoreJob.objects.active().filter(tenant_uid=locked.tenant_uid).first()
        if job is not None:
            raise ConflictError(f"A {job.mode} of this tenant is already {job.status} (restore job {job.pk}).")
        if mode == RestoreJob.Mode.REPLACE:
            running = BackupRecord.objects.active().filter(tenant_uid=locked.tenant_uid).first()
            if running is not None:
                raise ConflictError(f"Backup {running.pk} of this tenant is {running.status}; restore once it "
                                    f"finishes.")
        job = RestoreJob.objects.create(tenant=locked, tenant_uid=locked.tenant_uid, schema_name=locked.schema_name,
                                        record=record, mode=mode,
                                        requested_by=actor)
        backup_event_create(record=record, action=action, actor=actor, ip_address=ip_address,
                            details={"job_id": job.pk, "stage": "requested", "via": "api"})

        job_pk = job.pk

        def send() -> None:
            signature(RESTORE_BACKUP, job_pk).apply_async()

        transaction.on_commit(send)
    return job


def objects_request_input(*, model: Any, pks: Any) -> tuple[str, list]:
    """The model's label and the primary keys (as JSON keeps them) of an objects restore request; InvalidInput
    naming the field for an unknown model, one outside the tenant's apps, a pk that is not one, too many pks."""
    try:
        model_class = resolve_model(model)
    except ObjectsRefused as exc:
        raise InvalidInput(str(exc), field="model") from None
    if not isinstance(pks, list | tuple):
        raise InvalidInput("pks must be a list of primary keys.", field="pks")
    most = backups_settings.BACKUPS_RESTORE_OBJECTS_MAX_PKS
    if len(pks) > most:
        raise InvalidInput(f"At most {most} primary keys in one request (BACKUPS_RESTORE_OBJECTS_MAX_PKS).",
                           field="pks")
    try:
        keys = parse_pks(model_class, pks)
    except ObjectsRefused as exc:
        raise InvalidInput(str(exc), field="pks") from None
    return model_class._meta.label, [k if isinstance(k, int | str) else str(k) for k in keys]


def restore_objects_request(*, tenant: Any, record: BackupRecord, model: Any, pks: Any, dry_run: bool, actor: dict,
                            via: str, ip_address: str | None = None, hourly_limit: bool = False) -> RestoreJob:
    """A queued objects RestoreJob for the tenant's record, sent to the worker once this transaction commits.

    Refused at once (InvalidInput) for a bad model or pks, (409) for a record the worker would refuse or while
    another restore of the tenant is queued or running, and with `hourly_limit` (429) past the tenant's
    BACKUPS_RESTORES_PER_HOUR objects restores. A pk the backup does not hold is found by the job, which fails
    naming it."""
    label, keys = objects_request_input(model=model, pks=pks)
    with transaction.atomic():
        locked, record = _locked_tenant_and_record(tenant, record)
        if record.schema_name != locked.schema_name:
            raise ConflictError(f"Backup {record.pk} was taken from schema {record.schema_name}, which is not this "
                                f"tenant's schema ({locked.schema_name}) now.")
        if hourly_limit:
            api_hourly_limit_check(tenant=locked, now=timezone.now(), action=BackupEvent.Action.RESTORE_OBJECTS,
                                   setting="BACKUPS_RESTORES_PER_HOUR", what="objects restores")
        job = RestoreJob.objects.active().filter(tenant_uid=locked.tenant_uid).first()
        if job is not None:
            raise ConflictError(f"A {job.mode} of this tenant is already {job.status} (restore job {job.pk}).")
        options = {"model": label, "pks": keys, "dry_run": bool(dry_run)}
        job = RestoreJob.objects.create(tenant=locked, tenant_uid=locked.tenant_uid, schema_name=locked.schema_name,
                                        record=record, mode=RestoreJob.Mode.OBJECTS, options=options,
                                        requested_by=actor)
        backup_event_create(record=record, action=BackupEvent.Action.RESTORE_OBJECTS, actor=actor,
                            ip_address=ip_address, details={"job_id": job.pk, "stage": "requested", "via": via,
                                                            **options})
        job_pk = job.pk
        transaction.on_commit(lambda: signature(RESTORE_BACKUP, job_pk).apply_async())
    return job


def api_restore_job_get(*, tenant: Any, job_id: Any) -> RestoreJob:
    """One restore job of the tenant; NotFoundError for any other id."""
    pk = _as_id(job_id)
    job = (RestoreJob.objects.filter(pk=pk, tenant_uid=tenant.tenant_uid).select_related("record").first()
           if pk else None)
    if job is None:
        raise NotFoundError("No restore job with this id.")
    return job


def report_as_json(report: RestoreReport | ObjectsReport) -> dict:
    """A RestoreReport (or an objects restore's report) as the job's JSON report."""
    if isinstance(report, ObjectsReport):
        return report.as_json()
    data = dataclasses.asdict(report)
    data["row_counts"] = {table: {"manifest": counts[0], "restored": counts[1]}
                          for table, counts in report.row_counts.items()}
    data["mismatches"] = sorted(report.mismatches)
    return data


def restore_failure_message(exc: BaseException) -> str:
    """One sentence a user can act on, whatever a restore or a drill raised (never a bare "raised unexpectedly")."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The restore took longer than {backups_settings.BACKUPS_DUMP_SOFT_TIME_LIMIT} s."
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, ConnectionError):  # a broken pipe to the loader, a reset socket: not the spool's fault
        return f"The restore lost its connection to the loader or the server: {exc.strerror or exc}."
    if isinstance(exc, OSError):
        where = exc.filename or spool_dir()
        return (f"The restore's spool or scratch files could not be written or read ({where}; BACKUPS_SPOOL_DIR): "
                f"{exc.strerror or exc}.")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _finish(job: RestoreJob, *, ok: bool, report: dict, error: str = "") -> RestoreJob:
    """Write the job's outcome, on a fresh connection if Django's broke under the restore (a server restart).

    Earlier report keys (the safety backup an attempt took, the reaper's note) stay unless the outcome sets them.
    """
    job.status = RestoreJob.Status.SUCCEEDED if ok else RestoreJob.Status.FAILED
    job.report = {**(job.report or {}), **report}
    job.error = error[:10000]
    job.finished_at = timezone.now()
    write_through_fresh_connection(lambda: job.save(update_fields=["status", "report", "error", "finished_at"]))
    return job


def restore_job_recorded(*, tenant: Any, record: BackupRecord | None, ok: bool, report: dict, error: str = "",
                         actor: dict | None = None) -> RestoreJob:
    """A finished replace job for a restore run outside the job queue (recover_deployment), so the fleet's history
    and the admin show what was restored from which backup, and what could not be."""
    job = RestoreJob.objects.create(tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=tenant.schema_name,
                                    record=record, mode=RestoreJob.Mode.REPLACE, status=RestoreJob.Status.RUNNING,
                                    requested_by=actor or {}, started_at=timezone.now())
    return _finish(job, ok=ok, report=report, error=error)


def restore_job_fail(*, job: RestoreJob, error: str) -> RestoreJob:
    """Mark the job failed with `error` as its message (the reaper's giving up, a restore that raised)."""
    return _finish(job, ok=False, report={"message": error}, error=error)


def restore_job_fail_unfinished(*, job_id: int, error: str) -> RestoreJob | None:
    """Fail the job if it is still running and no live worker holds it (a time limit hit outside the restore);
    a failed drill mails ops."""
    with claim_unfinished(RestoreJob, job_id, namespace=RESTORE_JOB_NAMESPACE,
                          finished=RestoreJob.FINISHED_STATUSES) as (job, claimed):
        if not claimed or job.status != RestoreJob.Status.RUNNING:
            return job
        job = restore_job_fail(job=job, error=error)
    drill_report_failure(job)
    return job


def restore_job_note_safety(*, job: RestoreJob, safety_record_id: int) -> None:
    """Keep the safety backup's id on the job at once, so a retried attempt reuses it instead of backing up
    a schema the failed attempt may have touched."""
    job.report = {**(job.report or {}), "safety_record_id": safety_record_id}
    job.save(update_fields=["report"])


def _restore(job: RestoreJob, record: BackupRecord) -> RestoreReport | ObjectsReport:
    """The job's replace, verify drill or objects restore; a replace reuses the safety backup an earlier attempt
    already took."""
    if job.mode == RestoreJob.Mode.OBJECTS:
        options = job.options or {}
        return restore_objects(schema=job.schema_name, record=record, model=options.get("model"),
                               pks=options.get("pks") or [], dry_run=bool(options.get("dry_run")),
                               actor=job.requested_by)
    if job.mode != RestoreJob.Mode.REPLACE:
        return restore_verify(schema=job.schema_name, record=record, actor=job.requested_by)
    return restore_replace(schema=job.schema_name, record=record, actor=job.requested_by,
                           safety_record_id=(job.report or {}).get("safety_record_id"),
                           on_safety=lambda pk: restore_job_note_safety(job=job, safety_record_id=pk))


def _run_claimed(job: RestoreJob) -> RestoreJob:
    """Run a job this worker holds: every Exception ends as a failed job with its message, never `running`.

    Only KeyboardInterrupt and SystemExit (the worker being stopped) go up, once the job is marked failed.
    """
    try:
        record = job.record
        if record is None:
            raise BackupError("The backup was deleted before the restore could run.")
        report = _restore(job, record)
    except Exception as exc:
        message = restore_failure_message(exc)
        log = logger.warning if isinstance(exc, BackupError) else logger.exception
        log("restore job %s (%s of %s) failed: %s", job.pk, job.mode, job.schema_name, message)
        return restore_job_fail(job=job, error=message)
    except BaseException as exc:
        restore_job_fail(job=job, error=restore_failure_message(exc))
        raise
    return _finish(job, ok=report.ok, report=report_as_json(report), error="" if report.ok else report.message)


def restore_job_run(*, job_id: int, task_id: str = "") -> RestoreJob | None:
    """Run a queued job once: a finished job does nothing, a job another live worker holds is left to it.

    A failed scheduled drill mails ops whatever made it fail. If even a fresh connection cannot write the outcome
    the error goes up, and the reaper finds the job `running` with a free lock and sends it again.
    """
    with claim_unfinished(RestoreJob, job_id, namespace=RESTORE_JOB_NAMESPACE,
                          finished=RestoreJob.FINISHED_STATUSES) as (job, claimed):
        if not claimed:
            return job
        job.status, job.started_at, job.task_id = RestoreJob.Status.RUNNING, timezone.now(), task_id
        job.save(update_fields=["status", "started_at", "task_id"])
        job = _run_claimed(job)
    drill_report_failure(job)
    return job
