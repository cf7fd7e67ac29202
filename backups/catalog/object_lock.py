"""S3 Object Lock dates: how long a new backup is locked, and how retention keeps the locks ahead of itself.

Whoever holds the bucket's write keys (ransomware with a worker's credentials) can delete every backup, unless the
store refuses: with AWS_S3_OBJECT_LOCK_MODE each object and its manifest carry a retain-until date at least as
long as retention will keep them, so neither an attacker nor retention itself can remove one earlier. A new backup
is locked for the shortest time its policy keeps it (a daily keeper: keep_daily days, a manual backup:
BACKUPS_MANUAL_RETENTION_DAYS), never less than BACKUPS_OBJECT_LOCK_DAYS; each retention pass then extends the
locks of what it keeps to the rule keeping it (core.retention.lock_horizons: a weekly or monthly keeper is locked
for its weeks or months). Retention never deletes a backup before its date: it waits, and says what for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from backups.catalog.manifest import manifest_key
from backups.conf import backups_settings
from backups.core.retention import BackupInfo, RetentionPolicy, lock_horizons
from backups.models import BackupRecord
from backups.storage import Storage, StorageError, get_storage

logger = logging.getLogger(__name__)

DAY = timedelta(days=1)


@dataclass(frozen=True)
class LockWait:
    """A backup retention would delete but its lock keeps until `until`."""

    record_id: int
    file_name: str
    until: datetime


def locks(storage: Storage) -> bool:
    """Whether the backend writes objects with an Object Lock."""
    return bool(getattr(storage, "object_lock_mode", ""))


def retain_until_for(record: BackupRecord, *, now: datetime | None = None) -> datetime:
    """The retain-until date a new object of `record` is written with: as long as its policy keeps it at least."""
    now = now or timezone.now()
    days = float(backups_settings.BACKUPS_OBJECT_LOCK_DAYS)
    tenant = record.tenant
    if record.backup_type == BackupRecord.Type.AUTOMATIC:
        keep = tenant.backup_keep_daily if tenant is not None else 0
        days = max(days, int(keep) + 1)
    else:
        kept = backups_settings.BACKUPS_MANUAL_RETENTION_DAYS
        if record.backup_type == BackupRecord.Type.PRE_RESTORE and \
                backups_settings.BACKUPS_PRE_RESTORE_RETENTION_DAYS is not None:
            kept = backups_settings.BACKUPS_PRE_RESTORE_RETENTION_DAYS
        if kept is not None:  # else kept until deleted: the shortest lock, renewed by each retention pass
            days = max(days, int(kept) + 1)
    return now + days * DAY


def lock_waits(records: list[BackupRecord], doomed: set[int], *, now: datetime) -> list[LockWait]:
    """Those of the `doomed` records still locked at `now`, oldest lock first."""
    waits = [LockWait(r.pk, r.file_name, r.locked_until) for r in records
             if r.pk in doomed and r.locked_until is not None and r.locked_until > now]
    return sorted(waits, key=lambda w: (w.until, w.record_id))


def locks_extend(tenant: Any, records: list[BackupRecord], infos: list[BackupInfo], policy: RetentionPolicy, *,
                 now: datetime) -> int:
    """Extend the locks of the records retention keeps to their horizon (each backend that locks); the count.

    A lock is renewed once less than half of BACKUPS_OBJECT_LOCK_DAYS is left beyond its rule's date, so a
    pass does not rewrite every kept object's retention. A store that refuses is logged: the object keeps the
    lock it has, and the next pass tries again."""
    rolling = float(backups_settings.BACKUPS_OBJECT_LOCK_DAYS)
    horizons = lock_horizons(infos, policy, now=now, timezone=tenant.backup_timezone or "UTC", rolling_days=rolling)
    storages: dict[str, Storage | None] = {}
    extended = 0
    for record in records:
        wanted = horizons.get(record.pk)
        if wanted is None or record.status != BackupRecord.Status.SUCCEEDED:
            continue
        if record.locked_until is not None and record.locked_until >= wanted - rolling * DAY / 2:
            continue
        if record.storage_backend not in storages:
            try:
                storage = get_storage(record.storage_backend)
            except StorageError:
                storage = None
            storages[record.storage_backend] = storage if storage is not None and locks(storage) else None
        storage = storages[record.storage_backend]
        if storage is None:
            continue
        try:
            storage.extend_lock(record.storage_key, wanted)
            storage.extend_lock(manifest_key(record.storage_key), wanted)
        except StorageError as exc:
            logger.warning("could not extend the lock of backup %s to %s: %s", record.pk, wanted.isoformat(), exc)
            continue
        from backups.catalog.records import backup_record_set_locked_until

        backup_record_set_locked_until(record=record, until=wanted)
        extended += 1
    return extended
