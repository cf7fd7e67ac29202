"""After a backup: move the tenant's last_backup_at, and apply its retention policy; deletion of a record."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.file_blobs import file_blobs_sweep
from backups.catalog.manifest import manifest_key, manifest_names_record, read_manifest
from backups.catalog.object_lock import lock_waits, locks, locks_extend
from backups.catalog.records import (
    backup_event_create,
    backup_record_mark_deleting,
    backup_record_set_locked_until,
    backup_record_unmark_deleting,
    backup_records_deleting,
)
from backups.conf import backups_settings
from backups.core.naming import PUBLIC_UID
from backups.core.retention import BackupInfo, RetentionPolicy, backups_to_delete
from backups.models import BackupEvent, BackupRecord
from backups.storage import ObjectLocked, get_storage

logger = logging.getLogger(__name__)


def backup_record_finalize(*, record_id: int) -> BackupRecord | None:
    """Record a success on the tenant (last_backup_at only moves forward): last_backup_forward of one record."""
    record = BackupRecord.objects.filter(pk=record_id).first()
    if record is not None:
        last_backup_forward(records=[record])
    return record


def last_backup_forward(*, records: list[BackupRecord]) -> None:
    """Move each succeeded record's tenant's last_backup_at to its finish, forward only, in one UPDATE."""
    rows = [(r.tenant_id, r.finished_at) for r in records
            if r.tenant_id is not None and r.status == BackupRecord.Status.SUCCEEDED and r.finished_at]
    if not rows:
        return
    Tenant = get_tenant_model()
    table = connection.ops.quote_name(Tenant._meta.db_table)
    pk = connection.ops.quote_name(Tenant._meta.pk.column)
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {table} AS t SET last_backup_at = v.at "
            f"FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at) "
            f"WHERE t.{pk} = v.id AND (t.last_backup_at IS NULL OR t.last_backup_at < v.at)",
            ([tenant_id for tenant_id, _ in rows], [at for _, at in rows]))


def _owns_its_object(storage, record: BackupRecord) -> bool:
    """Whether the object at the record's key is this record's: a success wrote it; for anything else, only a
    signed manifest naming this record says so (an object of nobody may sit at a failed record's key)."""
    if record.status == BackupRecord.Status.SUCCEEDED:
        return True
    return manifest_names_record(read_manifest(storage, record.storage_key).manifest, record)


def _refuse_locked(storage, record: BackupRecord) -> None:
    """ObjectLocked (nothing marked, no audit event) while the catalog's or the store's lock date is ahead."""
    now = timezone.now()
    until = record.locked_until
    if until is None or until <= now:  # the catalog may lag the store (a lock set by hand, a lost update): ask it
        until = storage.lock_until(record.storage_key) if record.status == BackupRecord.Status.SUCCEEDED else None
        if until is not None and until > now and until != record.locked_until:
            backup_record_set_locked_until(record=record, until=until)
    if until is not None and until > now:
        raise ObjectLocked(f"Backup {record.file_name} is locked until {until.isoformat()} by S3 Object Lock "
                           f"(AWS_S3_OBJECT_LOCK_MODE={storage.object_lock_mode}); it can be deleted after that.",
                           until=until)


def backup_record_delete(*, record: BackupRecord, actor: dict | None = None, action: str = BackupEvent.Action.DELETE,
                         ip_address: str | None = None) -> None:
    """Delete the record, and its object and manifest when they are its own; the audit event keeps the file name.

    Crash-safe order: mark the record `deleting` (with its audit event, in one transaction), delete the object,
    then its manifest, then the record. A crash in between leaves a marked record, never a succeeded record
    without its object nor an object without a record; the reaper finishes it (finish_interrupted_deletions).
    """
    storage = get_storage(record.storage_backend)
    if locks(storage):
        _refuse_locked(storage, record)
    owns = _owns_its_object(storage, record)  # the same answer after a crash: status and manifest are kept
    stage = record.stage
    with transaction.atomic():
        if backup_record_mark_deleting(record=record):
            backup_event_create(record=record, action=action, actor=actor, ip_address=ip_address,
                                details={"file_name": record.file_name, "storage_key": record.storage_key,
                                         "owned_object": owns})
    if owns:
        try:
            storage.delete(record.storage_key)
        except ObjectLocked as exc:  # the store's lock outlasts the catalog's date: the backup stands, as it was
            if stage != BackupRecord.Stage.DELETING:
                backup_record_unmark_deleting(record=record, stage=stage, locked_until=exc.until)
            raise
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
    return retention_apply_many(tenant_ids=[tenant_id], now=now, reraise=True)


def retention_apply_many(*, tenant_ids: list[int], now: datetime | None = None, reraise: bool = False) -> list[int]:
    """Retention for every tenant: their records in one query, deletions only where a policy asks.

    One tenant's failure is logged and the others go on (retention runs again after its next backup), unless
    `reraise` (a single tenant's task, retried on a storage error)."""
    tenants = list(get_tenant_model().objects.filter(pk__in=set(tenant_ids)))
    if not tenants:
        return []
    by_uid = defaultdict(list)
    for record in BackupRecord.objects.filter(tenant_uid__in=[t.tenant_uid for t in tenants]):
        by_uid[record.tenant_uid].append(record)
    now = now or timezone.now()
    deleted = []
    for tenant in tenants:
        try:
            mine = retention_of(tenant, by_uid.get(tenant.tenant_uid, []), now=now)
        except Exception:
            if reraise:
                raise
            logger.exception("retention of %s failed", tenant.schema_name)
            continue
        if mine:
            logger.info("retention deleted %d backups of %s", len(mine), tenant.schema_name)
        deleted += mine
    return deleted


def retention_of(tenant: Any, records: list[BackupRecord], *, now: datetime) -> list[int]:
    """Delete those of the tenant's `records` (all of them) its policy no longer keeps; the deleted ids.
    retention_apply_many decides here, for one tenant or a batch's."""
    # a damaged backup counts as a failure: it is no "newest good backup", and it stops deletion like one
    infos = [BackupInfo(id=r.pk, created_at=r.created_at, backup_type=r.backup_type,
                        status=BackupRecord.Status.FAILED if r.damaged_at else r.status)
             for r in records]
    policy = retention_policy_for(tenant)
    doomed = backups_to_delete(infos, policy, now=now, timezone=tenant.backup_timezone or "UTC")
    waits = lock_waits(records, doomed, now=now)
    for wait in waits:  # never a delete the store would refuse: what retention waits for, and until when
        logger.info("retention waits for backup %s (%s) of %s: locked until %s", wait.record_id, wait.file_name,
                    tenant.schema_name, wait.until.isoformat())
    waiting = {w.record_id for w in waits}
    deleted = []
    for record in records:
        if record.pk in doomed and record.pk not in waiting:
            pk = record.pk
            try:
                backup_record_delete(record=record, actor={"retention": True}, action=BackupEvent.Action.RETENTION)
            except ObjectLocked as exc:  # the store's lock outlasts the catalog's date (set by hand): wait for it
                logger.info("retention waits for backup %s of %s: %s", pk, tenant.schema_name, exc)
                continue
            deleted.append(pk)
    locks_extend(tenant, records, infos, policy, now=now)
    if deleted:
        _sweep_file_blobs({(r.storage_backend, r.schema_name, r.tenant_uid) for r in records if r.pk in deleted})
    return deleted


def retention_waiting(*, tenant_id: int, now: datetime | None = None) -> list:
    """What retention would delete now but waits for (S3 Object Lock), oldest lock first: LockWait items."""
    tenant = get_tenant_model().objects.filter(pk=tenant_id).first()
    if tenant is None:
        return []
    now = now or timezone.now()
    records = list(BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid))
    infos = [BackupInfo(id=r.pk, created_at=r.created_at, backup_type=r.backup_type,
                        status=BackupRecord.Status.FAILED if r.damaged_at else r.status) for r in records]
    doomed = backups_to_delete(infos, retention_policy_for(tenant), now=now, timezone=tenant.backup_timezone or "UTC")
    return lock_waits(records, doomed, now=now)


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
        pk = record.pk
        try:
            backup_record_delete(record=record, actor={"deleted_tenant_retention": True},
                                 action=BackupEvent.Action.RETENTION)
        except ObjectLocked as exc:  # kept (and listed) until its lock ends; the next pass deletes it
            logger.info("deleted tenant's backup %s waits: %s", pk, exc)
            continue
        deleted.append(pk)
    if deleted:
        _sweep_file_blobs({(r.storage_backend, r.schema_name, r.tenant_uid) for r in doomed})
        logger.info("deleted %d backups of tenants deleted before %s", len(deleted), cutoff.isoformat())
    return deleted
