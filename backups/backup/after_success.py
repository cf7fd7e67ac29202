"""What follows a succeeded backup, written once for every path that makes one.

A backup started by beat, the API, the admin, `backup_tenant` or `run_scheduled_backups` is a batch of one or of
many (backups.backup.batch.run.batch_backup_run); whichever, its succeeded records come here, a group at a time:
the tenants' last_backup_at moves forward (one UPDATE), each is copied to the second target when one is configured
(BACKUPS_COPY_STORAGE: streamed, checked by digest; a failed copy is recorded and retried by the reaper's pass,
never failing the backup), then retention runs for the tenants of the automatic ones (one read of their records).
A retention failure is logged and left to the next backup's retention: the backups stand.
"""

from __future__ import annotations

import logging

from backups.backup.copy import backup_copy
from backups.catalog.finalize import last_backup_forward, retention_apply_many
from backups.conf import backups_settings
from backups.models import BackupRecord

logger = logging.getLogger(__name__)


def after_success(records: list[BackupRecord]) -> None:
    """Move the tenants' last_backup_at, then apply the retention of the automatic backups' tenants."""
    done = [r for r in records if r.status == BackupRecord.Status.SUCCEEDED]
    if not done:
        return
    last_backup_forward(records=done)
    if backups_settings.BACKUPS_COPY_STORAGE:
        for record in done:  # before retention, which may delete older backups the copy target keeps longer
            backup_copy(record=record)
    tenants = list(dict.fromkeys(r.tenant_id for r in done
                                 if r.backup_type == BackupRecord.Type.AUTOMATIC and r.tenant_id))
    if tenants:
        try:
            retention_apply_many(tenant_ids=tenants)
        except Exception:  # noqa: BLE001 - retention runs again after the next backup; the backups stand
            logger.exception("retention after %d backups failed", len(done))
