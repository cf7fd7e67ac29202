"""Moving objects stored before tenant identities (`<schema>/<file>`) under `<schema>/<tenant_uid>/`.

Each object is copied through the verified read (its size and SHA-256 must match the record), its
manifest rewritten with the identity and signed, the record pointed at the new key, and only then the
old object and manifest deleted: a crash at any step leaves the record pointing at a complete object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from backups.catalog.manifest import manifest_bytes, manifest_key, sign_manifest
from backups.core.errors import BackupError
from backups.core.naming import tenant_key, tenant_prefix
from backups.models import BackupRecord
from backups.storage import StorageError, get_storage
from backups.storage.reading import spool_verified

logger = logging.getLogger(__name__)


@dataclass
class KeysMoved:
    """What one pass moved, and what it could not."""

    moved: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _legacy_records():
    for record in BackupRecord.objects.filter(status=BackupRecord.Status.SUCCEEDED).order_by("pk").iterator():
        if not record.storage_key.startswith(tenant_prefix(record.schema_name, record.tenant_uid)):
            yield record


def backup_keys_migrate(*, dry_run: bool = False) -> KeysMoved:
    """Move every succeeded record's object that still lies under the bare schema prefix."""
    result = KeysMoved()
    for record in _legacy_records():
        new_key = tenant_key(record.schema_name, record.tenant_uid, record.file_name)
        if dry_run:
            result.moved.append(record.storage_key)
            continue
        try:
            _move(record, new_key)
        except (BackupError, StorageError, OSError) as exc:
            result.failed[record.storage_key] = str(exc)
            logger.error("could not move %s to %s: %s", record.storage_key, new_key, exc)
            continue
        result.moved.append(new_key)
    return result


def _move(record: BackupRecord, new_key: str) -> None:
    storage = get_storage(record.storage_backend)
    old_key = record.storage_key
    if storage.stat(new_key) is None:
        with storage.open_write(new_key) as writer:
            spool_verified(storage, record, writer)
            writer.commit()
    manifest = dict(record.manifest or {})
    manifest.update(tenant_uid=str(record.tenant_uid), record_id=record.pk)
    manifest.pop("signature", None)
    manifest = sign_manifest(manifest)
    storage.delete(manifest_key(new_key))
    storage.put_bytes(manifest_key(new_key), manifest_bytes(manifest))
    BackupRecord.objects.filter(pk=record.pk).update(storage_key=new_key, manifest=manifest)
    storage.delete(old_key)
    storage.delete(manifest_key(old_key))
    logger.info("moved %s to %s", old_key, new_key)



