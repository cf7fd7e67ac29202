"""history/<id>/restore-objects/: what only the API does around an objects restore job (its hourly limit, its
audit source); the job itself is backups.restore.jobs'."""

from __future__ import annotations

from typing import Any

from backups.models import BackupRecord, RestoreJob
from backups.restore.jobs import restore_objects_request


def api_restore_objects_request(*, tenant: Any, record: BackupRecord, model: Any, pks: Any, dry_run: bool,
                                actor: dict, ip_address: str | None) -> RestoreJob:
    """A queued objects restore of the tenant's own backup (202 + the job): 400 for an unknown model, a model
    outside the tenant's apps or a pk that is not one; 404 for another tenant's backup; 409 for one that cannot
    be restored or while another restore of the tenant runs; 429 past BACKUPS_RESTORES_PER_HOUR an hour."""
    return restore_objects_request(tenant=tenant, record=record, model=model, pks=pks, dry_run=dry_run,
                                   actor=actor, via="api", ip_address=ip_address, hourly_limit=True)
