"""Storage and catalog kept in agreement: the records say what the storage holds, and the storage can rebuild them.

Two kinds of disagreement, found per tenant prefix:
- a succeeded record whose object is gone (deleted by hand, a lifecycle rule, a bucket mix-up): the record
  becomes `failed` with a message, so retention keeps everything else and the overdue check tells ops;
- an object with no record (the database was restored from an older dump, or lost): when its
  `<file>.manifest.json` is beside it, carries this deployment's signature, a SHA-256, no time in the
  future, and agrees with the object (schema, identity, file name, size), the record is rebuilt from the
  manifest as a succeeded backup that can be restored; anything else is reported and ops are alerted,
  never imported.
Objects lie under `<schema>/<identity>/`: an imported record keeps the identity its key and its signed
manifest name, so it goes back to that tenant only (or stays a deleted tenant's).
Nothing in storage is ever deleted here.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.catalog.alerts import alert_ops
from backups.catalog.file_blobs import is_blob_key
from backups.catalog.manifest import MANIFEST_SUFFIX, manifest_key, read_manifest
from backups.catalog.records import (
    backup_event_create,
    backup_record_create_imported,
    backup_record_mark_missing,
    copy_mark_failed,
)
from backups.conf import backups_settings
from backups.core.naming import PUBLIC_UID, tenant_key
from backups.models import BackupCopy, BackupEvent, BackupRecord
from backups.storage import Storage, get_copy_storage, get_storage

logger = logging.getLogger(__name__)
ACTOR = {"reconcile": True}
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CLOCK_SKEW = timedelta(minutes=5)


@dataclass
class Reconciled:
    """What one pass found (and, unless it was a dry run, did)."""

    missing: list[str] = field(default_factory=list)  # keys of succeeded records whose object is gone
    imported: list[str] = field(default_factory=list)  # keys of objects whose record was rebuilt from the manifest
    unknown: list[str] = field(default_factory=list)  # keys of objects with no record and no manifest at all
    rejected: dict[str, str] = field(default_factory=dict)  # key -> why its manifest was not believed
    duplicates: list[str] = field(default_factory=list)  # keys of objects whose record or slot already has one
    schemas: int = 0
    copy_missing: list[str] = field(default_factory=list)  # keys of confirmed copies gone from the copy target
    copy_unknown: list[str] = field(default_factory=list)  # keys in the copy target that no copy row names


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
    schemas = schemas if schemas is not None else known_schemas()
    for schema in schemas:
        result.schemas += 1
        _reconcile_schema(storage, schema, result, dry_run=dry_run)
    _reconcile_copies(schemas, result, dry_run=dry_run)
    for key in result.missing:
        logger.error("backup object missing from %s storage: %s", storage.name, key)
    for key in result.unknown:
        logger.warning("object without a record or a manifest in %s storage: %s", storage.name, key)
    for key in result.duplicates:
        logger.warning("object %s in %s storage not imported: its record or its slot already has one", key,
                       storage.name)
    for key, why in result.rejected.items():
        logger.error("object %s in %s storage not imported: %s", key, storage.name, why)
    if result.rejected and not dry_run:
        alert_ops(f"{len(result.rejected)} stored backups refused by reconcile",
                  "These objects have no record and a manifest this deployment cannot trust; they were not "
                  "imported (check who can write to the bucket):\n"
                  + "\n".join(f"{key}: {why}" for key, why in sorted(result.rejected.items())))
    return result


def _reconcile_copies(schemas: list[str], result: Reconciled, *, dry_run: bool) -> None:
    """The second target (BACKUPS_COPY_STORAGE) against the copy rows: a confirmed copy whose object is gone is
    marked failed, so the reaper's pass copies it again while its backup exists; strangers are reported."""
    target = get_copy_storage()
    if target is None:
        return
    backend = backups_settings.BACKUPS_COPY_STORAGE
    for schema in schemas:
        objects = {o.key for o in target.list(schema + "/")}
        copies = {c.storage_key: c for c in BackupCopy.objects.filter(backend=backend, schema_name=schema)}
        for key, copy in copies.items():
            if copy.status == BackupCopy.Status.COPIED and key not in objects:
                result.copy_missing.append(key)
                logger.error("backup copy missing from the %s copy target: %s", backend, key)
                if not dry_run:
                    copy_mark_failed(copy=copy, error=f"The copy {key} is gone from the {backend} copy target "
                                                      "(deleted outside tenant-backups?).")
        for key in sorted(objects):
            if not key.endswith(MANIFEST_SUFFIX) and key not in copies:
                result.copy_unknown.append(key)
                logger.warning("object without a copy row in the %s copy target: %s", backend, key)


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
        if key.endswith(MANIFEST_SUFFIX) or key in records or is_blob_key(key):
            continue
        if manifest_key(key) not in objects:
            result.unknown.append(key)
            continue
        manifest, why = trusted_manifest(storage, schema, key, obj.size)
        if manifest is None:
            result.rejected[key] = why
            continue
        if _erased(manifest):
            result.rejected[key] = ("its tenant identity's backups were erased (the object outlived the erasure "
                                    "under a lock)")
            continue
        if _already_recorded(manifest):
            result.duplicates.append(key)
            continue
        result.imported.append(key)
        if not dry_run:
            _import(storage.name, schema, key, manifest)


def _manifest_slot(manifest: dict) -> datetime | None:
    slot = parse_datetime(manifest["slot"]) if isinstance(manifest.get("slot"), str) else None
    return slot if slot is not None and slot.tzinfo is not None else None


def _already_recorded(manifest: dict) -> bool:
    """Whether the record the manifest names, or another record of its tenant's slot, exists: never a second one."""
    uid = manifest["tenant_uid"]
    if BackupRecord.objects.filter(pk=manifest.get("record_id"), tenant_uid=uid).exists():
        return True
    slot = _manifest_slot(manifest)
    return slot is not None and BackupRecord.objects.filter(tenant_uid=uid, slot=slot).exists()


def _mark_missing(record: BackupRecord) -> None:
    error = (f"The stored object {record.storage_key} is gone from {record.storage_backend} storage "
             "(deleted outside tenant-backups?); this backup can no longer be restored.")
    with transaction.atomic():
        backup_record_mark_missing(record=record, error=error)
        backup_event_create(record=record, action=BackupEvent.Action.FAIL, actor=ACTOR, details={"error": error})


def _erased(manifest: dict) -> bool:
    """Whether the catalog recorded the erasure of the manifest's tenant identity (never imported again)."""
    return BackupEvent.objects.filter(tenant_uid=manifest["tenant_uid"], action=BackupEvent.Action.ERASE).exists()


def trusted_manifest(storage: Storage, schema: str, key: str, size: int) -> tuple[dict | None, str]:
    """The object's manifest when this deployment signed it and it describes exactly this object; else why not.
    Reads the storage only (recover_deployment asks it before any catalog exists)."""
    stored = read_manifest(storage, key)
    if stored.manifest is None:
        return None, stored.problem
    manifest = stored.manifest
    file_name, uid = manifest.get("file_name"), manifest.get("tenant_uid")
    try:
        uid = uuid.UUID(str(uid))
        expected_key = tenant_key(schema, uid, file_name) if isinstance(file_name, str) else None
    except ValueError:
        return None, "its manifest names no valid tenant identity or file name"
    if manifest.get("schema") != schema or expected_key != key:
        return None, "its manifest describes another schema, identity or file"
    if manifest.get("size") != size:
        return None, f"its manifest says {manifest.get('size')} bytes, the object has {size}"
    if not isinstance(manifest.get("sha256"), str) or not SHA256_RE.fullmatch(manifest["sha256"]):
        return None, "its manifest carries no SHA-256"
    if manifest.get("format") not in BackupRecord.Format.values or \
            manifest.get("compression") not in BackupRecord.Compression.values:
        return None, "its manifest names an unknown format or compression"
    latest = timezone.now() + CLOCK_SKEW
    for name in ("created_at", "finished_at"):
        when = parse_datetime(manifest[name]) if isinstance(manifest.get(name), str) else None
        if when is None or when.tzinfo is None or when > latest:
            return None, f"its manifest's {name} is missing or in the future"
    return manifest, ""


def _when(value, default: datetime) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return parsed or default


def _import(backend: str, schema: str, key: str, manifest: dict) -> BackupRecord:
    now = timezone.now()
    backup_type = manifest.get("backup_type")
    uid = uuid.UUID(manifest["tenant_uid"])
    tenant = get_tenant_model().objects.filter(tenant_uid=uid).first()
    record = backup_record_create_imported(
        tenant=tenant, tenant_uid=uid, tenant_deleted_at=None if tenant or uid == PUBLIC_UID else now,
        schema_name=schema,
        file_name=manifest["file_name"], storage_backend=backend, storage_key=key, format=manifest["format"],
        compression=manifest["compression"], encryption="age" if manifest.get("encryption") else "",
        size=manifest["size"], plain_size=manifest.get("plain_size"), sha256=manifest["sha256"],
        plain_sha256=manifest.get("plain_sha256", ""),
        backup_type=backup_type if backup_type in BackupRecord.Type.values else BackupRecord.Type.MANUAL,
        requested_by=ACTOR, manifest=manifest,
        slot=_manifest_slot(manifest) if tenant is not None else None,
    )
    created = _when(manifest.get("created_at"), now)
    BackupRecord.objects.filter(pk=record.pk).update(created_at=created,
                                                     finished_at=_when(manifest.get("finished_at"), created))
    backup_event_create(record=record, action=BackupEvent.Action.CREATE, actor=ACTOR,
                        details={"imported_from": manifest_key(key), "original_record_id": manifest.get("record_id")})
    return record

