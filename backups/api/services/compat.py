"""What the source documents' API answers (BACKUPS_API_COMPAT=1), computed from the product's own services.

Their clients expect a created backup to be done when create/ answers, the history as one array, and links
beside every listed object; the views in backups.api.compat only reshape what these return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from backups.api.services.cloud import CloudObject, api_cloud_url
from backups.backup.on_demand import HistoryFilters, api_backup_create, api_backup_wait, api_records_filter
from backups.catalog.records import backup_event_create
from backups.conf import backups_settings
from backups.models import BackupEvent, BackupRecord
from backups.storage import Storage


def api_compat_enabled() -> bool:
    """Whether the documents' contract answers on the API's paths instead of the product's."""
    return backups_settings.BACKUPS_API_COMPAT


def api_compat_backup_create(*, tenant: Any, actor: dict, ip_address: str | None, fmt: str | None = None,
                             compression: str | None = None) -> BackupRecord:
    """A manual backup through the worker, waited for up to BACKUPS_SYNC_WAIT_SECONDS: the documents' clients
    read the finished backup from create's answer and create the next one right after (no 409 in between)."""
    record = api_backup_create(tenant=tenant, actor=actor, ip_address=ip_address, fmt=fmt, compression=compression)
    return api_backup_wait(record_id=record.pk, timeout=backups_settings.BACKUPS_SYNC_WAIT_SECONDS)


def api_compat_is_done(record: BackupRecord) -> bool:
    """Whether the worker finished the record (either way)."""
    return not record.is_active


def api_compat_history(*, tenant: Any, filters: HistoryFilters) -> QuerySet[BackupRecord]:
    """The documents' history: backups that exist (succeeded, unless a status filter says otherwise), newest
    first, at most BACKUPS_API_COMPAT_HISTORY_LIMIT of them (their clients read one unpaginated array)."""
    if not filters.status:
        filters = HistoryFilters(backup_type=filters.backup_type, status=BackupRecord.Status.SUCCEEDED,
                                 date_from=filters.date_from, date_to=filters.date_to)
    limit = max(1, backups_settings.BACKUPS_API_COMPAT_HISTORY_LIMIT)
    return api_records_filter(tenant=tenant, filters=filters)[:limit]


@dataclass(frozen=True)
class CloudInfo:
    """Where a backup's object lies and a time-limited link to it (create's `?cloud_only=true` answer)."""

    filename: str
    s3_key: str
    size: int | None
    bucket: str
    url: str
    expires_in_seconds: int


def storage_bucket(storage: Storage) -> str:
    """The bucket the backend writes to ('' for the local folder)."""
    return str(getattr(storage, "bucket", "") or "")


def api_compat_cloud_info(*, record: BackupRecord, tenant: Any, actor: dict, ip_address: str | None,
                          storage: Storage, bound: dict | None = None) -> CloudInfo:
    """The record's object and a link to it, audited like cloud/get-url/ (a signed local link carries `bound`,
    who minted it, and ends with that credential)."""
    expires_in = backups_settings.BACKUPS_URL_DEFAULT_EXPIRY
    url = api_cloud_url(key=record.storage_key, expires_in=expires_in, tenant=tenant, actor=actor,
                        ip_address=ip_address, storage=storage, bound=bound)
    return CloudInfo(filename=record.file_name, s3_key=record.storage_key, size=record.size,
                     bucket=storage_bucket(storage), url=url, expires_in_seconds=expires_in)


def api_compat_cloud_links(*, objects: list[CloudObject], tenant: Any, actor: dict, ip_address: str | None,
                           storage: Storage, bound: dict | None = None) -> list[str]:
    """A time-limited link per listed object (the documents' list carries them); one audit event for the lot."""
    expires_in = backups_settings.BACKUPS_URL_DEFAULT_EXPIRY
    urls = [storage.url(obj.s3_key, expires_in, bound=bound) for obj in objects]
    if objects:
        backup_event_create(record=None, action=BackupEvent.Action.LINK, actor=actor, schema_name=tenant.schema_name,
                            tenant=tenant, ip_address=ip_address,
                            details={"via": "cloud-list", "count": len(objects), "expires_in": expires_in,
                                     "file_name": f"{len(objects)} objects"})
    return urls
