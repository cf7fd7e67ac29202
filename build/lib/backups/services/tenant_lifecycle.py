"""A deleted tenant's backups: kept for operators, stamped with when the tenant went, never anyone else's."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from backups.models import BackupRecord


def tenant_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Stamp the tenant's records before the foreign key is cleared: they stay bound to its identity,
    which no later tenant has, and BACKUPS_DELETED_TENANT_KEEP_DAYS counts from now."""
    uid = getattr(instance, "tenant_uid", None)
    if uid is not None:
        BackupRecord.objects.filter(tenant_uid=uid, tenant_deleted_at__isnull=True).update(
            tenant_deleted_at=timezone.now())
