"""Backup copies in the second target (BACKUPS_COPY_STORAGE): the one owner of a copy's state, and what ops read.

A copy is pending while it is made, copied once its size and SHA-256 matched the record's, failed with its
error otherwise (retried by the reaper's pass up to BACKUPS_COPY_MAX_ATTEMPTS, then ops are alerted).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone

from backups.conf import backups_settings
from backups.models import BackupCopy, BackupRecord


def copy_for_record(*, record: BackupRecord, backend: str) -> BackupCopy:
    """The record's copy row in `backend` (created pending on first use)."""
    copy, _ = BackupCopy.objects.get_or_create(
        backend=backend, storage_key=record.storage_key,
        defaults={"record": record, "tenant_uid": record.tenant_uid, "schema_name": record.schema_name,
                  "file_name": record.file_name, "backup_type": record.backup_type,
                  "backup_created_at": record.created_at, "size": record.size, "sha256": record.sha256})
    return copy


def copy_mark_started(*, copy: BackupCopy) -> BackupCopy:
    """One more attempt: pending."""
    copy.status, copy.attempts, copy.error = BackupCopy.Status.PENDING, copy.attempts + 1, ""
    copy.save(update_fields=["status", "attempts", "error"])
    return copy


def copy_mark_copied(*, copy: BackupCopy, locked_until: datetime | None = None) -> BackupCopy:
    """The copy's bytes and manifest are stored and its digest matched."""
    copy.status, copy.error, copy.copied_at, copy.locked_until = (BackupCopy.Status.COPIED, "", timezone.now(),
                                                                  locked_until)
    copy.save(update_fields=["status", "error", "copied_at", "locked_until"])
    return copy


def copy_mark_failed(*, copy: BackupCopy, error: str) -> BackupCopy:
    """The copy could not be made (or was found missing): failed, with why."""
    copy.status, copy.error = BackupCopy.Status.FAILED, error[:10000]
    copy.save(update_fields=["status", "error"])
    return copy


def copy_delete(*, copy: BackupCopy) -> None:
    """Forget a copy whose objects are gone."""
    copy.delete()


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
