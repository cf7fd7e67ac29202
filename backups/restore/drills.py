"""Scheduled verify drills: a sample of tenants' newest backups restored into a scratch database, every day.

A backup nobody has ever restored is a hope, not a backup. The drill picks the tenants whose backups
went longest without one (never-drilled first), restores each one's newest successful backup through
the same `restore_backup` task the API uses (scratch database, row counts against the manifest), and
records the result as a RestoreJob. A failed drill is mailed to ADMINS at once.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F, OuterRef, Subquery
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.catalog.alerts import alert_ops
from backups.catalog.records import backup_event_create
from backups.conf import backups_settings
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.queues import RESTORE_BACKUP, signature

logger = logging.getLogger(__name__)

SCHEDULER = {"scheduler": True, "drill": True}


def drill_candidates(*, sample: int) -> list[tuple[int, str, int]]:
    """(tenant id, schema, newest succeeded record id) of the `sample` tenants drilled longest ago."""
    Tenant = get_tenant_model()
    newest_ok = (BackupRecord.objects.restorable().filter(tenant_uid=OuterRef("tenant_uid"))
                 .order_by(F("finished_at").desc(nulls_last=True), "-pk").values("pk")[:1])
    last_drill = (RestoreJob.objects.filter(tenant=OuterRef("pk"), mode=RestoreJob.Mode.VERIFY)
                  .order_by("-created_at").values("created_at")[:1])
    # tenant_id IS NOT NULL: one NULL in a NOT IN list would exclude every tenant
    busy = RestoreJob.objects.active().filter(tenant__isnull=False).values("tenant_id")
    rows = (
        Tenant.objects.exclude(schema_name=get_public_schema_name()).exclude(pk__in=busy)
        .annotate(newest_ok=Subquery(newest_ok), last_drill=Subquery(last_drill))
        .filter(newest_ok__isnull=False)
        .order_by(F("last_drill").asc(nulls_first=True), "schema_name")
        .values_list("pk", "schema_name", "newest_ok")[: max(0, sample)]
    )
    return list(rows)


def drills_schedule(*, sample: int | None = None) -> list[RestoreJob]:
    """Create one verify RestoreJob per candidate and send each to the restore queue after commit."""
    sample = backups_settings.BACKUPS_DRILL_SAMPLE if sample is None else sample
    jobs = []
    with transaction.atomic():
        candidates = drill_candidates(sample=sample)
        records = BackupRecord.objects.select_related("tenant").in_bulk([record_id for *_, record_id in candidates])
        for tenant_id, schema, record_id in candidates:
            record = records[record_id]
            job = RestoreJob.objects.create(tenant_id=tenant_id, tenant_uid=record.tenant_uid, schema_name=schema,
                                            record=record,
                                            mode=RestoreJob.Mode.VERIFY, requested_by=SCHEDULER)
            backup_event_create(record=record, action=BackupEvent.Action.VERIFY, actor=SCHEDULER,
                                details={"job_id": job.pk, "stage": "scheduled drill"})
            jobs.append(job)
        ids = [job.pk for job in jobs]

        def send() -> None:
            for pk in ids:
                signature(RESTORE_BACKUP, pk).apply_async()

        transaction.on_commit(send)
    if jobs:
        logger.info("verify drills scheduled for %s", ", ".join(job.schema_name for job in jobs))
    return jobs


def drill_report_failure(job: RestoreJob) -> None:
    """Mail ADMINS when a scheduled drill failed: the tenant's newest backup could not be restored."""
    if job.mode != RestoreJob.Mode.VERIFY or not (job.requested_by or {}).get("drill"):
        return
    if job.status != RestoreJob.Status.FAILED:
        return
    logger.error("verify drill of %s (backup %s) failed: %s", job.schema_name, job.record_id, job.error)
    alert_ops(f"Verify drill failed for {job.schema_name}",  # the job's failed status stays in the admin anyway
              f"The newest backup of {job.schema_name} (record {job.record_id}) could not be restored into "
              f"a scratch database (restore job {job.pk}):\n\n{job.error}\n\n{job.report}")
