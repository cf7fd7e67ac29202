"""The manifest stored beside each backup: enough to check it, restore it, and rebuild the catalog.

The bucket is less trusted than the database, so a manifest read back from storage is believed only
when it carries a valid HMAC-SHA256 signature of this deployment (BACKUPS_MANIFEST_KEY, by default
derived from SECRET_KEY; BACKUPS_MANIFEST_OLD_KEYS still verify after a rotation).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from backups.conf import backups_settings
from backups.postgres.dumpers import DumpInfo
from backups.storage.sink import SinkResult

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_VERSION = 2
SIGNATURE_FIELD = "signature"
SIGNATURE_ALG = "HMAC-SHA256"


def manifest_key(key: str) -> str:
    """Where the manifest of the object at `key` lives."""
    return key + MANIFEST_SUFFIX


def build_manifest(*, record, info: DumpInfo, result: SinkResult, encryption: dict | None = None,
                   files: dict | None = None) -> dict[str, Any]:
    """The manifest of one finished dump (and, when the backup carries them, the tenant's files)."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "record_id": record.pk,
        "tenant_uid": str(record.tenant_uid),
        "schema": record.schema_name,
        "file_name": record.file_name,
        "format": record.format,
        "compression": record.compression,
        "encryption": encryption or {},
        "backup_type": record.backup_type,
        "slot": record.slot.isoformat() if record.slot else None,
        "created_at": record.created_at.isoformat(),
        "finished_at": timezone.now().isoformat(),
        "postgresql_version": info.server_version,
        "dump_tool": info.tool,
        "dump_tool_version": info.tool_version,
        "size": result.size,
        "sha256": result.sha256,
        "plain_size": result.plain_size,
        "plain_sha256": result.plain_sha256,
        "row_counts": info.row_counts,
        "migrations": info.migrations,
        "extensions": info.extensions,
        "privileges": info.privileges,
    }
    if files is not None:
        manifest["files"] = files
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Stable JSON encoding of a manifest."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _signing_keys() -> list[bytes]:
    """The current key first, then the old ones that still verify."""
    current = backups_settings.BACKUPS_MANIFEST_KEY
    keys = [current.encode() if current else
            hmac.new(settings.SECRET_KEY.encode(), b"tenant-backups manifest signing", hashlib.sha256).digest()]
    old = backups_settings.BACKUPS_MANIFEST_OLD_KEYS or ()
    keys += [k.encode() for k in ([old] if isinstance(old, str) else old) if k]
    return keys


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:16]


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with this deployment's signature over everything else in it."""
    key = _signing_keys()[0]
    value = hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
    return {**manifest, SIGNATURE_FIELD: {"alg": SIGNATURE_ALG, "key_id": _key_id(key), "value": value}}


def manifest_signature_valid(manifest: Any) -> bool:
    """Whether a manifest read from storage was signed by this deployment (current or an old key)."""
    if not isinstance(manifest, dict):
        return False
    signature = manifest.get(SIGNATURE_FIELD)
    if not isinstance(signature, dict) or signature.get("alg") != SIGNATURE_ALG:
        return False
    value, key_id = signature.get("value"), signature.get("key_id")
    if not isinstance(value, str) or not isinstance(key_id, str):
        return False
    body = _canonical(manifest)
    return any(_key_id(key) == key_id and hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), value)
               for key in _signing_keys())


@dataclass(frozen=True)
class StoredManifest:
    """The manifest beside a stored object, as read from the (untrusted) storage.

    `manifest` is set only when this deployment signed it; otherwise `problem` says why not, and `present` tells
    a manifest that is there but not ours (someone else's object: keep it) from none at all (or none readable)."""

    manifest: dict[str, Any] | None
    problem: str
    present: bool


def read_manifest(storage: Any, key: str) -> StoredManifest:
    """The one reader of stored manifests: read, parse, and check the signature of the manifest of `key`'s object.

    Every caller that acts on a manifest from storage (adopting an earlier attempt's object, deleting a record's
    object, importing objects into the catalog, checking a download) reads it here; none trusts an unsigned one."""
    from backups.storage import StorageError

    try:
        raw = storage.get_bytes(manifest_key(key))
    except StorageError as exc:
        return StoredManifest(None, f"its manifest cannot be read ({exc})", False)
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return StoredManifest(None, f"its manifest cannot be read ({exc})", True)
    if not manifest_signature_valid(manifest):
        return StoredManifest(None, "its manifest is not signed by this deployment (BACKUPS_MANIFEST_KEY)", True)
    return StoredManifest(manifest, "", True)


def manifest_names_record(manifest: dict[str, Any] | None, record: Any) -> bool:
    """Whether a signed manifest says its object is this record's (its id and its tenant's identity)."""
    return (manifest is not None and manifest.get("record_id") == record.pk
            and manifest.get("tenant_uid") == str(record.tenant_uid))
