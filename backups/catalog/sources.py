"""Where a backup's bytes are read from: the primary, or its copy in the second target when the primary's object
is missing or damaged. Whoever reads says which (restore reports, drill results, download headers)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from backups.catalog.alerts import alert_ops
from backups.catalog.copies import copied
from backups.catalog.records import backup_record_mark_damaged
from backups.catalog.tenant_keys import identities_for
from backups.core.errors import StoredObjectDamaged
from backups.models import BackupRecord
from backups.storage import ObjectNotFound, Storage, StorageError, get_copy_storage, get_storage
from backups.storage.reading import VerifiedBackup, open_backup

logger = logging.getLogger(__name__)


def copy_stands_in(record: BackupRecord) -> bool:
    """Whether a record whose primary object was found missing or damaged has a confirmed copy to use instead."""
    return copied(record=record) is not None


def _copy_target(record: BackupRecord) -> Storage | None:
    if copied(record=record) is None:
        return None
    try:
        return get_copy_storage()
    except StorageError as exc:
        logger.error("the copy of backup %s cannot be read: %s", record.pk, exc)
        return None


def _tell(record: BackupRecord, why: str, backend: str) -> str:
    note = f"The primary object of backup {record.pk} is {why}; its copy in the second target ({backend}) was used."
    logger.warning(note)
    alert_ops(f"Backup {record.file_name} of {record.schema_name} read from its copy", note)
    return note


def _identities(record: BackupRecord, primary: Storage) -> list | None:
    """The age identities that open the record (its tenant's data key first), or None when it is not encrypted."""
    if record.encryption != "age":
        return None
    storages = [primary]
    try:
        if (target := get_copy_storage()) is not None:
            storages.append(target)
    except StorageError:
        pass
    return identities_for(record, storages=storages)


@contextlib.contextmanager
def open_backup_or_copy(record: BackupRecord) -> Iterator[tuple[VerifiedBackup, str]]:
    """The record's verified bytes and a note: "" from the primary, else a sentence saying the copy was used.

    Only the opening falls back (a missing object, a size or SHA-256 that does not match); an error in the
    caller's block is the caller's."""
    primary = get_storage(record.storage_backend)
    identities = _identities(record, primary)
    opening = open_backup(primary, record, identities)
    try:
        backup = opening.__enter__()
    except (ObjectNotFound, StoredObjectDamaged) as exc:
        target = _copy_target(record)
        if target is None:
            raise
        why = "missing" if isinstance(exc, ObjectNotFound) else f"damaged ({exc})"
        if isinstance(exc, StoredObjectDamaged):  # the primary's damage is recorded whatever the copy holds
            backup_record_mark_damaged(record=record, error=str(exc))
        with open_backup(target, record, identities) as backup:
            yield backup, _tell(record, why, target.name)
        return
    try:
        yield backup, ""
    except BaseException:
        if not opening.__exit__(*sys.exc_info()):
            raise
    else:
        opening.__exit__(None, None, None)


def open_copy_stream(record: BackupRecord, why: str):
    """A raw stream of the record's copy (ObjectNotFound when there is none)."""
    target = _copy_target(record)
    if target is None:
        raise ObjectNotFound(f"Backup {record.pk} has no copy in a second target.")
    stream = target.open_read(record.storage_key)
    _tell(record, why, target.name)
    return stream


def open_stream_or_copy(record: BackupRecord):
    """A raw stream of the record's object for a download, and which target it comes from ("primary"/"copy").

    A download checks the bytes while it streams; it can fall back only when the primary object is missing."""
    primary = get_storage(record.storage_backend)
    try:
        return primary.open_read(record.storage_key), "primary"
    except ObjectNotFound:
        target = _copy_target(record)
        if target is None:
            raise
        stream = target.open_read(record.storage_key)
        _tell(record, "missing", target.name)
        return stream, "copy"
