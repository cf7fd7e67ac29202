"""The second target: every succeeded backup copied, streamed, checked by digest, with its own retention.

A copy reads the primary's object once, in chunks, hashing as it writes to the copy target's streaming writer
(an S3 multipart upload uploads one part while the next is read): memory stays at about two parts whatever the
size. It is committed only when size and SHA-256 equal the record's (a primary damaged since it was made is never
copied), then the record's signed manifest is stored beside it. Ransomware that holds the primary's keys cannot
reach a target with other keys (and, with BACKUPS_COPY_AWS_S3_OBJECT_LOCK_MODE, not even one with the same).

A copy never holds the primary back: a failure is recorded on the copy (BackupCopy), logged, retried by the
reaper's pass, and alerted once BACKUPS_COPY_MAX_ATTEMPTS tries have failed; the backup stays succeeded.
"""

from __future__ import annotations

import hashlib
import logging

from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.alerts import alert_ops
from backups.catalog.copies import copies_to_retry
from backups.catalog.manifest import manifest_bytes, manifest_key, manifest_signature_valid
from backups.catalog.object_lock import locks, retain_until_for
from backups.catalog.records import (
    copy_delete,
    copy_for_record,
    copy_mark_copied,
    copy_mark_failed,
    copy_mark_started,
)
from backups.catalog.tenant_keys import tenant_key_store
from backups.conf import backups_settings
from backups.core.errors import StoredObjectDamaged
from backups.core.retention import BackupInfo, RetentionPolicy, backups_to_delete
from backups.models import BackupCopy, BackupRecord
from backups.storage import ObjectLocked, Storage, StorageError, get_copy_storage, get_storage

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


def copy_object(*, source: Storage, target: Storage, key: str, size: int, sha256: str, retain_until=None) -> None:
    """Stream `key` from `source` to `target`, committing only when its size and SHA-256 are the expected ones."""
    digest = hashlib.sha256()
    total = 0
    writer = target.open_write(key, retain_until=retain_until) if retain_until else target.open_write(key)
    try:
        with source.open_read(key) as stream:
            while data := stream.read(CHUNK):
                total += len(data)
                if total > size:
                    raise StoredObjectDamaged(f"The primary object {key} is longer than the {size} bytes its record "
                                              "says: it is damaged or was tampered with, and was not copied.")
                digest.update(data)
                writer.write(data)
        if total != size or digest.hexdigest() != sha256:
            raise StoredObjectDamaged(f"The primary object {key} does not match the size and SHA-256 recorded when "
                                      "it was made: it is damaged or was tampered with, and was not copied.")
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _copy_record(record: BackupRecord, source: Storage, target: Storage):
    """Copy the record's object and signed manifest; the copy's retain-until date (None unless the target locks)."""
    retain_until = retain_until_for(record) if locks(target) else None
    if not manifest_signature_valid(record.manifest):
        raise StoredObjectDamaged(f"Backup {record.pk} has no signed manifest in the catalog; it is not copied.")
    for key in (manifest_key(record.storage_key), record.storage_key):  # a half copy an earlier try left behind
        try:
            target.delete(key)
        except ObjectLocked:
            pass
    tenant_key_store(record=record, storage=target)  # the copy can be restored from that target alone
    copy_object(source=source, target=target, key=record.storage_key, size=record.size, sha256=record.sha256,
                retain_until=retain_until)
    try:
        data = manifest_bytes(record.manifest)
        if retain_until:
            target.put_bytes(manifest_key(record.storage_key), data, retain_until=retain_until)
        else:
            target.put_bytes(manifest_key(record.storage_key), data)
        stored = target.stat(record.storage_key)
        if stored is None or stored.size != record.size:
            raise StorageError(f"The copy target holds {stored.size if stored else 'no'} bytes at "
                               f"{record.storage_key}, expected {record.size}.")
    except BaseException:
        for key in (record.storage_key, manifest_key(record.storage_key)):
            try:
                target.delete(key)
            except StorageError as exc:  # a locked half copy: the next try overwrites nothing, it is complete
                logger.warning("could not delete the half copy %s: %s", key, exc)
        raise
    return retain_until


def backup_copy(*, record: BackupRecord) -> BackupCopy | None:
    """Copy a succeeded backup to the second target (None when there is none); never raises.

    The result says how it went: copied, or failed with its error (retried by the reaper's pass)."""
    if not backups_settings.BACKUPS_COPY_STORAGE or record.status != BackupRecord.Status.SUCCEEDED:
        return None
    copy = copy_for_record(record=record, backend=backups_settings.BACKUPS_COPY_STORAGE)
    if copy.record_id != record.pk or copy.sha256 != record.sha256:  # never over another backup's copy
        logger.error("backup %s is not copied: the copy target keeps another backup's copy at %s", record.pk,
                     record.storage_key)
        return None
    if copy.status == BackupCopy.Status.COPIED:
        return copy
    copy_mark_started(copy=copy)
    try:
        target = get_copy_storage()
        locked_until = _copy_record(record, get_storage(record.storage_backend), target)
    except Exception as exc:  # noqa: BLE001 - whatever the copy meets, the primary backup stands
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (StorageError, StoredObjectDamaged)) else str(exc)
        copy_mark_failed(copy=copy, error=f"Copy to {copy.backend} failed: {error}")
        logger.warning("copy of backup %s to %s failed (try %d): %s", record.pk, copy.backend, copy.attempts, error)
        if copy.attempts >= backups_settings.BACKUPS_COPY_MAX_ATTEMPTS:
            alert_ops(f"Backup {record.file_name} of {record.schema_name} could not be copied",
                      f"Copying backup {record.pk} to the second target ({copy.backend}, BACKUPS_COPY_STORAGE) "
                      f"failed {copy.attempts} times; the last error:\n{error}\n\nThe backup itself succeeded and "
                      "is in the primary storage; the copy is not retried any more.")
        return copy
    copy_mark_copied(copy=copy, locked_until=locked_until)
    logger.info("backup %s copied to %s", record.pk, copy.backend)
    try:
        copies_retention(tenant_uid=record.tenant_uid)
    except Exception:  # noqa: BLE001 - the copy's retention runs again after the next copy
        logger.exception("retention of the copies of %s failed", record.schema_name)
    return copy


def backup_copies_retry() -> dict[str, int]:
    """Retry the copies that failed (the reaper's pass); counts of copied and still failing."""
    done = {"copied": 0, "failed": 0}
    for copy in copies_to_retry():
        result = backup_copy(record=copy.record)
        done["copied" if result is not None and result.status == BackupCopy.Status.COPIED else "failed"] += 1
    return done


def copy_retention_policy(tenant) -> RetentionPolicy:
    """The copy target's counts (BACKUPS_COPY_KEEP_*), each defaulting to the tenant's own."""
    def count(setting: str, own: int) -> int:
        value = getattr(backups_settings, setting)
        return own if value is None else int(value)

    return RetentionPolicy(
        keep_daily=count("BACKUPS_COPY_KEEP_DAILY", tenant.backup_keep_daily if tenant else 7),
        keep_weekly=count("BACKUPS_COPY_KEEP_WEEKLY", tenant.backup_keep_weekly if tenant else 4),
        keep_monthly=count("BACKUPS_COPY_KEEP_MONTHLY", tenant.backup_keep_monthly if tenant else 12),
        manual_retention_days=backups_settings.BACKUPS_MANUAL_RETENTION_DAYS,
        pre_restore_retention_days=backups_settings.BACKUPS_PRE_RESTORE_RETENTION_DAYS)


def copies_retention(*, tenant_uid, now=None) -> list[int]:
    """Delete the tenant's copies the copy target's policy no longer keeps; the deleted copies' ids.

    Copies outlive their record when the copy target keeps more (a record deleted by the primary's retention
    leaves its copy to this policy). A locked copy is waited for, as in the primary."""
    target = get_copy_storage()
    if target is None:
        return []
    now = now or timezone.now()
    tenant = get_tenant_model().objects.filter(tenant_uid=tenant_uid).first()
    copies = list(BackupCopy.objects.filter(tenant_uid=tenant_uid, backend=backups_settings.BACKUPS_COPY_STORAGE,
                                            status=BackupCopy.Status.COPIED))
    infos = [BackupInfo(id=c.pk, created_at=c.backup_created_at, status="succeeded", backup_type=c.backup_type)
             for c in copies]
    doomed = backups_to_delete(infos, copy_retention_policy(tenant), now=now,
                               timezone=(tenant.backup_timezone if tenant else "") or "UTC")
    deleted = []
    for copy in copies:
        if copy.pk not in doomed:
            continue
        if copy.locked_until and copy.locked_until > now:
            logger.info("copy retention waits for %s: locked until %s", copy.storage_key, copy.locked_until)
            continue
        try:
            target.delete(copy.storage_key)
            target.delete(manifest_key(copy.storage_key))
        except ObjectLocked as exc:
            logger.info("copy retention waits for %s: %s", copy.storage_key, exc)
            continue
        deleted.append(copy.pk)
        copy_delete(copy=copy)
    return deleted
