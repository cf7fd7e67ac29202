"""Storage and catalog kept in agreement: the records say what the storage holds, and the storage can rebuild them.

Two kinds of disagreement, found per tenant prefix:
- a succeeded record whose object is gone (deleted by hand, a lifecycle rule, a bucket mix-up): the record
  becomes `failed` with a message, so retention keeps everything else and the overdue check tells ops;
- an object with no record (the database was restored from an older dump, or lost): when its
  `<file>.manifest.json` is beside it and agrees with it (schema, file name, size), the record is rebuilt
  from the manifest as a succeeded backup that can be restored; without one it is only reported.
Nothing in storage is ever deleted here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.manifest import MANIFEST_SUFFIX, manifest_key
from backups.models import BackupEvent, BackupRecord
from backups.naming import tenant_key
from backups.storage import Storage, StorageError, get_storage

from .records import backup_event_create

logger = logging.getLogger(__name__)
ACTOR = {"reconcile": True}


@dataclass
class Reconciled:
    """What one pass found (and, unless it was a dry run, did)."""

    missing: list[str] = field(default_factory=list)  # keys of succeeded records whose object is gone
    imported: list[str] = field(default_factory=list)  # keys of objects whose record was rebuilt from the manifest
    unknown: list[str] = field(default_factory=list)  # keys of objects with neither record nor usable manifest
    schemas: int = 0


def known_schemas() -> list[str]:
    """Every schema the catalog knows: the tenants' and those records were taken from (tenants may be gone)."""
    tenants = get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).values_list("schema_name",
                                                                                                  flat=True)
    recorded = BackupRecord.objects.values_list("schema_name", flat=True).distinct()
    return sorted(set(tenants) | set(recorded))


def storage_reconcile(*, schemas: list[str] | None = None, dry_run: bool = False) -> Reconciled:
    """Compare the records of the configured backend with what it holds under each tenant's prefix."""
    storage = get_storage()
    result = Reconciled()
    for schema in schemas if schemas is not None else known_schemas():
        result.schemas += 1
        _reconcile_schema(storage, schema, result, dry_run=dry_run)
    for key in result.missing:
        logger.error("backup object missing from %s storage: %s", storage.name, key)
    for key in result.unknown:
        logger.warning("object without a record or a usable manifest in %s storage: %s", storage.name, key)
    return result


def _reconcile_schema(storage: Storage, schema: str, result: Reconciled, *, dry_run: bool) -> None:
    objects = {o.key: o for o in storage.list(schema + "/")}
    records = {r.storage_key: r for r in BackupRecord.objects.filter(storage_backend=storage.name,
                                                                      schema_name=schema)}
    for key, record in records.items():
        if record.status == BackupRecord.Status.SUCCEEDED and key not in objects:
            result.missing.append(key)
            if not dry_run:
                _mark_missing(record)
    for key, obj in objects.items():
        if key.endswith(MANIFEST_SUFFIX) or key in records:
            continue
        manifest = _usable_manifest(storage, schema, key, obj.size) if manifest_key(key) in objects else None
        if manifest is None:
            result.unknown.append(key)
            continue
        result.imported.append(key)
        if not dry_run:
            _import(storage.name, schema, key, manifest)


def _mark_missing(record: BackupRecord) -> None:
    error = (f"The stored object {record.storage_key} is gone from {record.storage_backend} storage "
             "(deleted outside tenant-backups?); this backup can no longer be restored.")
    with transaction.atomic():
        BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.FAILED, error=error,
                                                         stage="missing")
        backup_event_create(record=record, action=BackupEvent.Action.FAIL, actor=ACTOR, details={"error": error})


def _usable_manifest(storage: Storage, schema: str, key: str, size: int) -> dict | None:
    """The object's manifest when it describes exactly this object; None otherwise."""
    try:
        manifest = json.loads(storage.get_bytes(manifest_key(key)))
    except (StorageError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict):
        return None
    file_name = manifest.get("file_name")
    agrees = (manifest.get("schema") == schema and isinstance(file_name, str) and "/" not in file_name
              and tenant_key(schema, file_name) == key and manifest.get("size") == size
              and manifest.get("format") in BackupRecord.Format.values
              and manifest.get("compression") in BackupRecord.Compression.values)
    return manifest if agrees else None


def _when(value, default: datetime) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return parsed or default


def _import(backend: str, schema: str, key: str, manifest: dict) -> BackupRecord:
    now = timezone.now()
    backup_type = manifest.get("backup_type")
    record = BackupRecord.objects.create(
        tenant=get_tenant_model().objects.filter(schema_name=schema).first(), schema_name=schema,
        file_name=manifest["file_name"], storage_backend=backend, storage_key=key, format=manifest["format"],
        compression=manifest["compression"], encryption="age" if manifest.get("encryption") else "",
        size=manifest["size"], plain_size=manifest.get("plain_size"), sha256=manifest.get("sha256", ""),
        plain_sha256=manifest.get("plain_sha256", ""), status=BackupRecord.Status.SUCCEEDED,
        backup_type=backup_type if backup_type in BackupRecord.Type.values else BackupRecord.Type.MANUAL,
        requested_by=ACTOR, stage="imported", manifest=manifest,
    )
    created = _when(manifest.get("created_at"), now)
    BackupRecord.objects.filter(pk=record.pk).update(created_at=created,
                                                     finished_at=_when(manifest.get("finished_at"), created))
    backup_event_create(record=record, action=BackupEvent.Action.CREATE, actor=ACTOR,
                        details={"imported_from": manifest_key(key), "original_record_id": manifest.get("record_id")})
    return record

