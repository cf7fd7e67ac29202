"""A tenant's backup schedule and retention, read and changed through the API (validated by the model)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from django.db import transaction
from django_tenants.utils import get_tenant_model

from backups.catalog.records import backup_event_create
from backups.models import BackupEvent
from backups.schedule.mixins import SCHEDULE_FIELDS

RETENTION_FIELDS = ("backup_keep_daily", "backup_keep_weekly", "backup_keep_monthly")
EDITABLE_FIELDS = SCHEDULE_FIELDS + RETENTION_FIELDS


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value


def schedule_snapshot(tenant: Any) -> dict:
    """The schedule fields, plus the derived next run, as JSON values."""
    return {name: _jsonable(getattr(tenant, name)) for name in (*EDITABLE_FIELDS, "next_backup_at")}


def api_schedule_defaults() -> dict:
    """What PUT sets a field it was not given to: the model's default."""
    model = get_tenant_model()
    values = {}
    for name in EDITABLE_FIELDS:
        field = model._meta.get_field(name)
        values[name] = field.get_default() if field.has_default() else None
    return values


def api_schedule_update(*, tenant_id: int, changes: dict, actor: dict, ip_address: str | None) -> Any:
    """Apply the changes, validate them with the model's own checks (ValidationError per field), save, audit.

    The row is locked so a dispatcher tick or another request cannot interleave; saving recomputes
    `next_backup_at` from the new schedule.
    """
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not schedule fields: {sorted(unknown)}")
    Tenant = get_tenant_model()
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant_id)
        before = schedule_snapshot(tenant)
        for name, value in changes.items():
            setattr(tenant, name, value)
        other_fields = [f.name for f in Tenant._meta.concrete_fields if f.name not in EDITABLE_FIELDS]
        tenant.clean_fields(exclude=other_fields)
        tenant.clean()
        tenant.save(update_fields=list(EDITABLE_FIELDS))
        after = schedule_snapshot(tenant)
        backup_event_create(record=None, action=BackupEvent.Action.SCHEDULE_CHANGE, actor=actor,
                            schema_name=tenant.schema_name, tenant=tenant, ip_address=ip_address,
                            details={"before": before, "after": after,
                                     "changed": sorted(k for k in before if before[k] != after[k])})
    return tenant
