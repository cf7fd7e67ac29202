"""Backups an operator asks for from the Django admin, for many tenants at once."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from backups.backup.enqueue import backups_enqueue
from backups.backup.on_demand import api_events_keep_file_name
from backups.catalog.finalize import backup_record_delete
from backups.catalog.records import backup_record_create
from backups.core.errors import RestoreFailed
from backups.models import BackupEvent, BackupRecord, RestoreJob


def operator_backups_create(*, tenants: Iterable, actor: dict) -> tuple[list[BackupRecord], list[str]]:
    """One manual backup per tenant, sent after commit on the priority queue; tenants with one queued or
    running already are skipped (returned by schema name) rather than piled up."""
    tenants = list(tenants)
    busy_uids = set(BackupRecord.objects.active().filter(tenant_uid__in=[t.tenant_uid for t in tenants])
                    .values_list("tenant_uid", flat=True))
    busy = {t.schema_name for t in tenants if t.tenant_uid in busy_uids}
    records = []
    with transaction.atomic():
        for tenant in tenants:
            if tenant.schema_name in busy:
                continue
            record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant,
                                          backup_type=BackupRecord.Type.MANUAL, requested_by=actor)
            BackupEvent.objects.filter(record=record, action=BackupEvent.Action.CREATE).update(
                details={"via": "admin", "file_name": record.file_name})
            records.append(record)
        backups_enqueue(records)
    return records, sorted(busy)


def operator_backups_delete(*, records: Iterable[BackupRecord], actor: dict) -> tuple[list[int], list[int]]:
    """Delete backups from the Django admin as the API does: object, signed manifest and record, crash-safe and
    audited (a bare row delete left the object and its manifest, and the next reconcile imported it again).
    Queued or running backups are skipped, as the API refuses them; returns (deleted ids, skipped ids)."""
    deleted, skipped = [], []
    for record in records:
        if record.is_active:
            skipped.append(record.pk)
            continue
        api_events_keep_file_name(record=record)
        pk = record.pk
        backup_record_delete(record=record, actor=actor)
        deleted.append(pk)
    return deleted, skipped


def operator_restore_objects_request(*, record: BackupRecord, model: str, pks: list, dry_run: bool,
                                     actor: dict) -> RestoreJob:
    """An objects restore job of the record's tenant asked for from the Django admin, as the API asks for it
    (without the API's hourly limit); the tenant must still be the identity the backup was taken from."""
    from django_tenants.utils import get_tenant_model

    from backups.restore.jobs import restore_objects_request

    tenant = get_tenant_model().objects.filter(tenant_uid=record.tenant_uid).first()
    if tenant is None:
        raise RestoreFailed(f"The tenant backup {record.pk} was taken from no longer exists; its objects cannot be "
                            "restored into a later tenant.")
    return restore_objects_request(tenant=tenant, record=record, model=model, pks=pks, dry_run=dry_run, actor=actor,
                                   via="admin")
