"""After a backup: move the tenant's last_backup_at, and apply its retention policy."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.file_blobs import file_blobs_sweep
from backups.catalog.manifest import manifest_key, manifest_signature_valid
from backups.catalog.records import backup_event_create, backup_record_mark_deleting, backup_records_deleting
from backups.conf import backups_settings
from backups.core.naming import PUBLIC_UID
from backups.core.retention import BackupInfo, RetentionPolicy, backups_to_delete
from backups.models import BackupEvent, BackupRecord
from backups.storage import StorageError, get_storage

logger = logging.getLogger(__name__)


def backup_record_finalize(*, record_id: int) -> BackupRecord | None:
    """Record a success on the tenant (last_backup_at only moves forward)."""
    record = BackupRecord.objects.filter(pk=record_id).first()
    if record is None or record.status != BackupRecord.Status.SUCCEEDED or record.tenant_id is None:
        return record
    get_tenant_model().objects.filter(pk=record.tenant_id).filter(
        Q(last_backup_at__isnull=True) | Q(last_backup_at__lt=record.finished_at)
    ).update(last_backup_at=record.finished_at)
    return record


def backup_after_success(record: BackupRecord) -> None:
    """What the chain's later links do, in this process: last_backup_at, then retention (automatic backups).

    For single backups run outside the chain (a batch member retried alone, the cron pass); a retention failure is
    logged and left to the next backup's retention (the backup stands)."""
    backup_record_finalize(record_id=record.pk)
    if record.backup_type == BackupRecord.Type.AUTOMATIC and record.tenant_id:
        try:
            retention_apply(tenant_id=record.tenant_id)
        except Exception:  # noqa: BLE001 - retention runs again after the next backup; the backup stands
            logger.exception("retention after backup %s failed", record.pk)


def _owns_its_object(storage, record: BackupRecord) -> bool:
    """Whether the object at the record's key is this record's: a success wrote it; for anything else, only a
    signed manifest naming this record says so (an object of nobody may sit at a failed record's key)."""
    if record.status == BackupRecord.Status.SUCCEEDED:
        return True
    try:
        manifest = json.loads(storage.get_bytes(manifest_key(record.storage_key)))
    except (StorageError, ValueError, UnicodeDecodeError):
        return False
    return (manifest_signature_valid(manifest) and manifest.get("record_id") == record.pk
            and manifest.get("tenant_uid") == str(record.tenant_uid))


def backup_record_delete(*, record: BackupRecord, actor: dict | None = None, action: str = BackupEvent.Action.DELETE,
                         ip_address: str | None = None) -> None:
    """Delete the record, and its object and manifest when they are its own; the audit event keeps the file name.

    Crash-safe order: mark the record `deleting` (with its audit event, in one transaction), delete the object,
    then its manifest, then the record. A crash in between leaves a marked record, never a succeeded record
    without its object nor an object without a record; the reaper finishes it (finish_interrupted_deletions).
    """
    storage = get_storage(record.storage_backend)
    owns = _owns_its_object(storage, record)  # the same answer after a crash: status and manifest are kept
    with transaction.atomic():
        if backup_record_mark_deleting(record=record):
            backup_event_create(record=record, action=action, actor=actor, ip_address=ip_address,
                                details={"file_name": record.file_name, "storage_key": record.storage_key,
                                         "owned_object": owns})
    if owns:
        storage.delete(record.storage_key)
        storage.delete(manifest_key(record.storage_key))
    record.delete()


def finish_interrupted_deletions() -> int:
    """Finish the deletions a crash interrupted (records left `deleting`); the count."""
    done = 0
    for record in backup_records_deleting():
        try:
            backup_record_delete(record=record, actor={"reaper": True})
            done += 1
        except Exception as exc:  # noqa: BLE001 - one record's backend (gone, misconfigured) never stops the reaper
            logger.warning("could not finish deleting backup %s: %s", record.pk, exc)
    return done


def retention_policy_for(tenant) -> RetentionPolicy:
    """The tenant's GFS counts and the project's manual and safety-backup rules."""
    return RetentionPolicy(keep_daily=tenant.backup_keep_daily, keep_weekly=tenant.backup_keep_weekly,
                           keep_monthly=tenant.backup_keep_monthly,
                           manual_retention_days=backups_settings.BACKUPS_MANUAL_RETENTION_DAYS,
                           pre_restore_retention_days=backups_settings.BACKUPS_PRE_RESTORE_RETENTION_DAYS)


def retention_apply(*, tenant_id: int, now: datetime | None = None) -> list[int]:
    """Delete what the tenant's policy no longer keeps; returns the deleted record ids."""
    tenant = get_tenant_model().objects.filter(pk=tenant_id).first()
    if tenant is None:
        return []
    deleted = retention_of(tenant, list(BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid)),
                           now=now or timezone.now())
    if deleted:
        logger.info("retention deleted %d backups of %s", len(deleted), tenant.schema_name)
    return deleted


def retention_of(tenant: Any, records: list[BackupRecord], *, now: datetime) -> list[int]:
    """Delete those of the tenant's `records` (all of them) its policy no longer keeps; the deleted ids.
    retention_apply and the batch's retention_apply_many both decide here."""
    # a damaged backup counts as a failure: it is no "newest good backup", and it stops deletion like one
    infos = [BackupInfo(id=r.pk, created_at=r.created_at, backup_type=r.backup_type,
                        status=BackupRecord.Status.FAILED if r.damaged_at else r.status)
             for r in records]
    doomed = backups_to_delete(infos, retention_policy_for(tenant), now=now, timezone=tenant.backup_timezone or "UTC")
    deleted = []
    for record in records:
        if record.pk in doomed:
            deleted.append(record.pk)
            backup_record_delete(record=record, actor={"retention": True}, action=BackupEvent.Action.RETENTION)
    if deleted:
        _sweep_file_blobs({(r.storage_backend, r.schema_name, r.tenant_uid) for r in records if r.pk in doomed})
    return deleted


def _sweep_file_blobs(identities: set[tuple[str, str, Any]]) -> None:
    """Remove the file blobs the deleted backups alone listed (a failure is logged: the next sweep retries)."""
    for backend, schema, uid in sorted(identities, key=str):
        try:
            file_blobs_sweep(storage=get_storage(backend), schema=schema, uid=uid)
        except Exception:  # noqa: BLE001 - the deletions stand; unreferenced blobs wait for the next sweep
            logger.exception("removing unreferenced file blobs of %s failed", schema)


def public_retention_apply(*, now: datetime | None = None) -> list[int]:
    """Delete the public schema's backups its policy (BACKUPS_PUBLIC_KEEP_DAILY / _WEEKLY / _MONTHLY, days in UTC)
    no longer keeps; the same rules as a tenant's, so its newest good backup is never deleted."""
    policy_of = SimpleNamespace(backup_keep_daily=backups_settings.BACKUPS_PUBLIC_KEEP_DAILY,
                                backup_keep_weekly=backups_settings.BACKUPS_PUBLIC_KEEP_WEEKLY,
                                backup_keep_monthly=backups_settings.BACKUPS_PUBLIC_KEEP_MONTHLY,
                                backup_timezone="UTC")
    return retention_of(policy_of, list(BackupRecord.objects.filter(tenant_uid=PUBLIC_UID)), now=now or timezone.now())


def deleted_tenant_backups_purge(*, now: datetime | None = None) -> list[int]:
    """Delete the backups of tenants deleted more than BACKUPS_DELETED_TENANT_KEEP_DAYS ago (None: keep them).

    Until then operators still see them (admin, CLI) as a deleted tenant's; no later tenant ever does.
    """
    days = backups_settings.BACKUPS_DELETED_TENANT_KEEP_DAYS
    if days is None:
        return []
    cutoff = (now or timezone.now()) - timedelta(days=int(days))
    doomed = list(BackupRecord.objects.filter(tenant__isnull=True, tenant_deleted_at__lt=cutoff)
                  .exclude(status__in=BackupRecord.ACTIVE_STATUSES))
    deleted = []
    for record in doomed:
        deleted.append(record.pk)
        backup_record_delete(record=record, actor={"deleted_tenant_retention": True},
                             action=BackupEvent.Action.RETENTION)
    if deleted:
        _sweep_file_blobs({(r.storage_backend, r.schema_name, r.tenant_uid) for r in doomed})
        logger.info("deleted %d backups of tenants deleted before %s", len(deleted), cutoff.isoformat())
    return deleted
