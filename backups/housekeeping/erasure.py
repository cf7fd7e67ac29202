"""Erasure of a tenant identity's backups: the answer to a data-erasure request (and the end of a deleted tenant's
keep period).

Every object under the identity's prefixes is deleted in every target this deployment writes (the primary
backends its records name, and the second target), then its records and copies are forgotten, then its data keys
(backups.catalog.tenant_keys) are destroyed beside the objects and in the catalog. What could not be deleted (an
object under S3 Object Lock, a target that cannot be reached) is listed: with data keys it is ciphertext no key
of the deployment opens any more; without (no BACKUPS_AGE_RECIPIENTS) it stays readable until it can be deleted,
and the erasure says so. One audit event records what was erased (counts, never data).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.records import backup_event_create, backup_records_erase
from backups.catalog.tenant_keys import KeyDestruction, tenant_keys_destroy
from backups.conf import backups_settings
from backups.core.errors import BackupError
from backups.models import BackupCopy, BackupEvent, BackupRecord, TenantKey
from backups.storage import ObjectLocked, Storage, StorageError, get_copy_storage, get_storage

logger = logging.getLogger(__name__)


@dataclass
class Erasure:
    """What one erasure did, and what it left."""

    tenant_uid: str
    schemas: list[str]
    deleted: int = 0  # objects deleted, every target
    records: int = 0
    locked: list[str] = field(default_factory=list)  # "<target>: <key> (locked until ...)"
    unreachable: list[str] = field(default_factory=list)  # "<target>: <key or prefix>: why"
    keys: KeyDestruction = field(default_factory=KeyDestruction)
    encrypted: bool = False  # whether every backup of the identity was encrypted to a data key of its own

    @property
    def left(self) -> list[str]:
        return self.locked + self.unreachable + self.keys.left

    @property
    def complete(self) -> bool:
        """Nothing of the identity is left anywhere this deployment writes."""
        return not self.left

    @property
    def unreadable(self) -> bool:
        """Whatever is left cannot be read: its data keys are destroyed everywhere, and every backup used one."""
        return self.encrypted and not self.keys.left


def _targets(tenant_uid) -> tuple[dict[str, Storage], list[str]]:
    """{name: storage} of every target holding the identity's backups, and the ones that cannot be built."""
    names = set(BackupRecord.objects.filter(tenant_uid=tenant_uid).values_list("storage_backend", flat=True))
    names.add(backups_settings.BACKUPS_STORAGE)
    targets: dict[str, Storage] = {}
    broken = []
    for name in sorted(names):
        try:
            targets[name] = get_storage(name)
        except StorageError as exc:
            broken.append(f"{name}: {exc}")
    try:
        copy = get_copy_storage()
        if copy is not None:
            targets[f"copy ({backups_settings.BACKUPS_COPY_STORAGE})"] = copy
    except StorageError as exc:
        broken.append(f"copy ({backups_settings.BACKUPS_COPY_STORAGE}): {exc}")
    return targets, broken


def _all_enveloped(tenant_uid) -> bool:
    records = BackupRecord.objects.filter(tenant_uid=tenant_uid, status=BackupRecord.Status.SUCCEEDED)
    copies = BackupCopy.objects.filter(tenant_uid=tenant_uid, record__isnull=True)
    if copies.exists():  # copies that outlived their records: their encryption is not known here
        return False
    return all(r.encryption == "age" and ((r.manifest or {}).get("encryption") or {}).get("key_id")
               for r in records)


def tenant_erase(*, tenant_uid, actor: dict | None = None) -> Erasure:
    """Erase every backup of the identity in every target, then destroy its data keys; the report."""
    schemas = sorted(set(BackupRecord.objects.filter(tenant_uid=tenant_uid).values_list("schema_name", flat=True))
                     | set(BackupCopy.objects.filter(tenant_uid=tenant_uid).values_list("schema_name", flat=True))
                     | set(TenantKey.objects.filter(tenant_uid=tenant_uid).values_list("schema_name", flat=True)))
    if BackupRecord.objects.filter(tenant_uid=tenant_uid).active().exists():
        raise BackupError("A backup of this tenant is queued or running; erase its backups once it has finished.")
    result = Erasure(tenant_uid=str(tenant_uid), schemas=schemas, encrypted=_all_enveloped(tenant_uid))
    targets, broken = _targets(tenant_uid)
    result.unreachable += broken
    for name, storage in targets.items():
        for schema in schemas:
            prefix = f"{schema}/{tenant_uid}/"
            try:
                keys = [o.key for o in storage.list(prefix)]
            except StorageError as exc:
                result.unreachable.append(f"{name}: {prefix}: {exc}")
                continue
            for key in keys:
                try:
                    storage.delete(key)
                    result.deleted += 1
                except ObjectLocked as exc:
                    when = f" (locked until {exc.until.isoformat()})" if exc.until else " (locked)"
                    result.locked.append(f"{name}: {key}{when}")
                except StorageError as exc:
                    result.unreachable.append(f"{name}: {key}: {exc}")
    result.keys = tenant_keys_destroy(tenant_uid=tenant_uid, storages=targets)
    tenant = get_tenant_model().objects.filter(tenant_uid=tenant_uid).first()
    event = backup_event_create(record=None, action=BackupEvent.Action.ERASE, actor=actor, tenant=tenant,
                        schema_name=schemas[0] if schemas else "", details={
                            "tenant_uid": str(tenant_uid), "schemas": schemas, "objects_deleted": result.deleted,
                            "records": BackupRecord.objects.filter(tenant_uid=tenant_uid).count(),
                            "keys_destroyed": len(result.keys.keys), "left_locked": len(result.locked),
                            "left_unreachable": len(result.unreachable) + len(result.keys.left),
                            "left_unreadable": result.unreadable})
    if event.tenant_uid is None:  # a deleted tenant's erasure: bound to its identity all the same
        BackupEvent.objects.filter(pk=event.pk).update(tenant_uid=tenant_uid)
    result.records = backup_records_erase(tenant_uid=tenant_uid)
    logger.info("erased the backups of %s (%s): %d objects deleted, %d records, %d keys destroyed, %d left",
                ", ".join(schemas) or "-", tenant_uid, result.deleted, result.records, len(result.keys.keys),
                len(result.left))
    return result


def expired_tenants_erase(*, now: datetime | None = None) -> list[Erasure]:
    """Erase the identities of tenants deleted more than BACKUPS_DELETED_TENANT_KEEP_DAYS ago (None: never)."""
    days = backups_settings.BACKUPS_DELETED_TENANT_KEEP_DAYS
    if days is None:
        return []
    cutoff = (now or timezone.now()) - timedelta(days=int(days))
    live = set(get_tenant_model().objects.values_list("tenant_uid", flat=True))
    uids = set(BackupRecord.objects.filter(tenant__isnull=True, tenant_deleted_at__lt=cutoff)
               .values_list("tenant_uid", flat=True).distinct()) - live
    done = []
    for uid in sorted(uids, key=str):
        try:
            done.append(tenant_erase(tenant_uid=uid, actor={"deleted_tenant_retention": True}))
        except Exception as exc:  # noqa: BLE001 - one identity never stops the others; the next pass tries again
            logger.warning("could not erase the backups of deleted tenant identity %s: %s", uid, exc)
    return done
