"""Backup copies in the second target (BACKUPS_COPY_STORAGE): what the copy step, restores and ops read.

A copy is pending while it is made, copied once its size and SHA-256 matched the record's, failed with its
error otherwise (retried by the reaper's pass up to BACKUPS_COPY_MAX_ATTEMPTS, then ops are alerted). Its state
is written only in backups.catalog.records (copy_mark_*), with the records' own.
"""

from __future__ import annotations

from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from backups.conf import backups_settings
from backups.models import BackupCopy, BackupRecord


def copied(*, record: BackupRecord) -> BackupCopy | None:
    """The record's confirmed copy in the configured copy target, if any."""
    backend = backups_settings.BACKUPS_COPY_STORAGE
    if not backend:
        return None
    return BackupCopy.objects.filter(backend=backend, storage_key=record.storage_key, sha256=record.sha256,
                                     status=BackupCopy.Status.COPIED).first()


def copies_to_retry(*, max_attempts: int | None = None) -> list[BackupCopy]:
    """Failed (or abandoned pending) copies of records that still exist, with attempts left."""
    limit = max_attempts or backups_settings.BACKUPS_COPY_MAX_ATTEMPTS
    backend = backups_settings.BACKUPS_COPY_STORAGE
    return list(BackupCopy.objects.filter(backend=backend, record__isnull=False, attempts__lt=limit,
                                          record__status=BackupRecord.Status.SUCCEEDED)
                .filter(Q(status=BackupCopy.Status.FAILED) | Q(status=BackupCopy.Status.PENDING,
                                                               created_at__lt=timezone.now() - _stale()))
                .select_related("record"))


def _stale():
    from datetime import timedelta

    return timedelta(seconds=backups_settings.BACKUPS_RUNNING_GRACE_SECONDS)


def copies_failed_count() -> int:
    """Copies that failed (metrics)."""
    return BackupCopy.objects.filter(status=BackupCopy.Status.FAILED).count()


def newest_backup_targets(tenant_uids: list) -> dict:
    """tenant_uid -> how many targets (0, 1 or 2) hold the tenant's newest succeeded backup (dashboard, metrics).

    The primary counts when the newest record is succeeded and not found missing or damaged; the copy target when
    that record has a confirmed copy there."""
    newest = (BackupRecord.objects.filter(tenant_uid=OuterRef("tenant_uid"), status=BackupRecord.Status.SUCCEEDED)
              .order_by("-created_at", "-pk").values("pk")[:1])
    rows = (BackupRecord.objects.filter(tenant_uid__in=tenant_uids, pk=Subquery(newest))
            .annotate(copies_ok=Count("copies", filter=Q(copies__status=BackupCopy.Status.COPIED,
                                                         copies__backend=backups_settings.BACKUPS_COPY_STORAGE or "-")))
            .values("tenant_uid", "damaged_at", "copies_ok"))
    result = {uid: 0 for uid in tenant_uids}
    for row in rows:
        result[row["tenant_uid"]] = (0 if row["damaged_at"] else 1) + min(1, row["copies_ok"])
    return result
