"""What the storage holds for a tenant, by key: list, delete, time-limited links.

Every key that arrives in a request goes through `api_cloud_key_parse` before any storage call:
malformed keys are refused (400) and keys outside the tenant's prefix look exactly like missing ones
(404), so a tenant learns nothing about another tenant's objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

from backups.backup.on_demand import api_events_keep_file_name
from backups.catalog.finalize import backup_record_delete
from backups.catalog.manifest import MANIFEST_SUFFIX, manifest_key
from backups.catalog.records import backup_event_create
from backups.conf import backups_settings
from backups.core.naming import InvalidKey, check_tenant_key, tenant_prefix
from backups.core.service_errors import ConflictError, InvalidInput, NotFoundError
from backups.models import BackupEvent, BackupRecord
from backups.storage import Storage, StoredObject, get_storage
from backups.storage.local import PARTIAL_PREFIX

MAX_KEY_LENGTH = 1024
MAX_SEGMENT_BYTES = 255  # NAME_MAX of Linux file systems: the local backend could not hold a longer name
NOT_FOUND = "No backup with this key."


def api_cloud_key_parse(raw: Any, *, tenant: Any) -> str:
    """The storage key a request names, URL-decoded once, checked to lie directly under the tenant's prefix.

    InvalidInput (400) for a malformed key: empty, overlong (or a segment no file system holds), not UTF-8,
    NUL or control characters, backslashes, absolute, `.`/`..`/empty segments, or still
    percent-encoded after one decoding.
    NotFoundError (404) for a well-formed key that is not one of this tenant's backups.
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("s3_key must be a non-empty string.", field="s3_key")
    if len(raw) > 3 * MAX_KEY_LENGTH:
        raise InvalidInput(f"s3_key is longer than {MAX_KEY_LENGTH} characters.", field="s3_key")
    try:
        key = unquote_to_bytes(raw).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise InvalidInput("s3_key is not valid UTF-8.", field="s3_key") from None
    if len(key) > MAX_KEY_LENGTH or len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise InvalidInput(f"s3_key is longer than {MAX_KEY_LENGTH} bytes.", field="s3_key")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidInput("s3_key contains control characters.", field="s3_key")
    if "\\" in key or "%" in key:
        raise InvalidInput("s3_key contains a backslash or a doubly encoded character.", field="s3_key")
    if key.startswith("/"):
        raise InvalidInput("s3_key must be relative (<schema>/<file>), not absolute.", field="s3_key")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidInput("s3_key must not contain empty, '.' or '..' segments.", field="s3_key")
    if any(len(part.encode("utf-8")) > MAX_SEGMENT_BYTES for part in key.split("/")):
        raise InvalidInput(f"s3_key has a segment longer than {MAX_SEGMENT_BYTES} bytes.", field="s3_key")
    try:
        check_tenant_key(key, tenant.schema_name, tenant.tenant_uid)
    except InvalidKey:
        raise NotFoundError(NOT_FOUND) from None
    name = key.rsplit("/", 1)[-1]
    if name.startswith(".") or name.endswith(MANIFEST_SUFFIX):
        raise NotFoundError(NOT_FOUND)
    return key


def _is_backup_object(obj: StoredObject, prefix: str) -> bool:
    rest = obj.key[len(prefix):]
    return bool(rest) and "/" not in rest and not rest.startswith((".", PARTIAL_PREFIX)) \
        and not rest.endswith(MANIFEST_SUFFIX)


@dataclass(frozen=True)
class CloudObject:
    """One backup object as the cloud list shows it."""

    filename: str
    s3_key: str
    size: int
    last_modified: datetime
    storage_class: str


def api_cloud_list(*, tenant: Any, storage: Storage | None = None) -> list[CloudObject]:
    """The backup objects under the tenant's prefix (manifests left out), newest first."""
    storage = storage or get_storage()
    prefix = tenant_prefix(tenant.schema_name, tenant.tenant_uid)
    objects = [
        CloudObject(filename=obj.key[len(prefix):], s3_key=obj.key, size=obj.size, last_modified=obj.last_modified,
                    storage_class=obj.storage_class or ("STANDARD" if storage.name == "s3" else ""))
        for obj in storage.list(prefix) if obj.key.startswith(prefix) and _is_backup_object(obj, prefix)
    ]
    objects.sort(key=lambda o: (o.last_modified, o.s3_key), reverse=True)
    return objects


def api_cloud_record(*, storage: Storage, key: str, tenant: Any) -> BackupRecord | None:
    """The tenant's record of the object at `key` in this storage, if there is one."""
    return BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid, storage_backend=storage.name,
                                       storage_key=key).first()


def api_cloud_delete(*, key: str, tenant: Any, actor: dict, ip_address: str | None,
                     storage: Storage | None = None) -> bool:
    """Delete the object, its manifest and its record if it has one; returns whether a record went too."""
    storage = storage or get_storage()
    record = api_cloud_record(storage=storage, key=key, tenant=tenant)
    if record is not None:
        if record.is_active:
            raise ConflictError(f"Backup {record.pk} is {record.status}; it can be deleted once it finishes.")
        api_events_keep_file_name(record=record)
        backup_record_delete(record=record, actor=actor, ip_address=ip_address)
        return True
    if storage.stat(key) is None:
        raise NotFoundError(NOT_FOUND)
    storage.delete(key)
    storage.delete(manifest_key(key))
    backup_event_create(record=None, action=BackupEvent.Action.DELETE, actor=actor, schema_name=tenant.schema_name,
                        tenant=tenant, ip_address=ip_address,
                        details={"via": "cloud", "storage_key": key, "file_name": key.rsplit("/", 1)[-1]})
    return False


def api_url_max_expiry(storage: Storage | None = None) -> int:
    """The longest link lifetime allowed: BACKUPS_URL_MAX_EXPIRY, and the backend's own cap."""
    limit = backups_settings.BACKUPS_URL_MAX_EXPIRY
    backend_cap = getattr(storage, "url_max_expiry", None)
    return min(limit, int(backend_cap)) if backend_cap else limit


def api_cloud_url(*, key: str, expires_in: int, tenant: Any, actor: dict,
                  ip_address: str | None, storage: Storage | None = None, bound: dict | None = None) -> str:
    """A time-limited download link to the object (the backend's own: presigned S3, signed local); a signed
    local link carries `bound` (who minted it, with which credential) and ends with it."""
    storage = storage or get_storage()
    limit = api_url_max_expiry(storage)
    if not 1 <= expires_in <= limit:
        raise InvalidInput(f"expiration must be between 1 and {limit} seconds.", field="expiration")
    if storage.stat(key) is None:
        raise NotFoundError(NOT_FOUND)
    url = storage.url(key, expires_in, bound=bound)
    record = api_cloud_record(storage=storage, key=key, tenant=tenant)
    backup_event_create(record=record, action=BackupEvent.Action.LINK, actor=actor, schema_name=tenant.schema_name,
                        tenant=tenant, ip_address=ip_address,
                        details={"storage_key": key, "expires_in": expires_in, "file_name": key.rsplit("/", 1)[-1]})
    return url
