"""One object per record whatever crashes: a rerun adopts or replaces what its own earlier attempt stored.

A worker killed after the object is linked into place but before the record says `succeeded` leaves a
complete object at the record's key, with or without its manifest. Its rerun must not store a second copy
beside it (each such crash would cost a full copy forever), and must never overwrite someone else's object.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from backups.catalog.manifest import manifest_key, manifest_names_record, read_manifest
from backups.catalog.records import backup_record_mark_succeeded, backup_record_take_free_key
from backups.models import BackupRecord
from backups.storage import Storage

logger = logging.getLogger(__name__)
CLOCK_SKEW = timedelta(minutes=5)


def backup_attempt_take_key(*, record: BackupRecord, storage: Storage) -> dict | None:
    """Make the record's key ready for this attempt; returns the manifest to adopt when the work is already done.

    - nothing at the key: go on;
    - an object whose signed manifest names this record and whose size matches it: an earlier attempt of this
      record finished storing and died before recording; its manifest is returned and nothing is dumped again;
    - an object with no manifest (or one naming this record that does not match), stored after this record was
      created, while an earlier attempt of this record ran (`attempts` > 1): that attempt died between the
      link and the manifest; it is deleted and replaced;
    - anything else belongs to someone else (a record lost in a database restore): kept, and this record moves
      to the next free `-N` name.
    """
    stored = storage.stat(record.storage_key)
    if stored is None:
        return None
    stored_manifest = read_manifest(storage, record.storage_key)
    manifest = stored_manifest.manifest
    if manifest_names_record(manifest, record) and manifest.get("size") == stored.size and manifest.get("sha256"):
        logger.warning("backup %s: adopting the object its earlier attempt stored at %s", record.pk,
                       record.storage_key)
        return manifest
    own = (record.attempts > 1 and stored.last_modified >= record.created_at - CLOCK_SKEW
           and (not stored_manifest.present or manifest_names_record(manifest, record)))
    if own:
        logger.warning("backup %s: replacing the unrecorded object its earlier attempt left at %s", record.pk,
                       record.storage_key)
        storage.delete(manifest_key(record.storage_key))
        storage.delete(record.storage_key)
        return None
    backup_record_take_free_key(record=record, storage=storage)
    return None


def backup_attempt_adopt(*, record: BackupRecord, manifest: dict) -> BackupRecord:
    """Record the earlier attempt's confirmed object as this record's success."""
    return backup_record_mark_succeeded(
        record=record, size=manifest["size"], sha256=manifest["sha256"],
        plain_size=manifest.get("plain_size") or 0, plain_sha256=manifest.get("plain_sha256") or "",
        manifest=manifest,
    )
