"""Where a tenant's file blobs live, which of them the catalog still needs, and removing the others.

A blob holds one distinct file content of one tenant identity, compressed (and age-encrypted) as the backup that
first stored it: `<schema>/<identity>/files/<sha256 of the plain content><.zst|.gz|><.age|>`. Backups list the
blobs they need in their manifest (`files.entries`), so an unchanged file is stored once across all of a
tenant's backups. No manifest sits beside a blob, so reconcile and recovery never take one for a backup.
"""

from __future__ import annotations

import json
import logging
import re
import uuid

from backups.catalog.manifest import MANIFEST_SUFFIX, manifest_signature_valid
from backups.core.naming import COMPRESSION_EXT, ENCRYPTION_EXT, tenant_prefix
from backups.models import BackupRecord
from backups.postgres.locks import TenantBusy, tenant_lock
from backups.storage import Storage, StorageError

logger = logging.getLogger(__name__)
FILES_FOLDER = "files/"
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def blob_prefix(schema: str, uid: uuid.UUID | str) -> str:
    """`<schema>/<identity>/files/`: every blob of the tenant identity lies under it."""
    return tenant_prefix(schema, uid) + FILES_FOLDER


def is_blob_key(key: str) -> bool:
    """`<schema>/<identity>/files/<sha256>...`: a tenant file's content (listed by manifests, never a backup)."""
    parts = key.split("/")
    return len(parts) == 4 and parts[2] == "files"


def blob_key(schema: str, uid: uuid.UUID | str, sha256: str, *, compression: str, encryption: str) -> str:
    """The key of one content, in one encoding (a change of compression or encryption stores it again)."""
    if not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"Not a SHA-256: {sha256!r}.")
    return blob_prefix(schema, uid) + sha256 + COMPRESSION_EXT[compression] + ENCRYPTION_EXT[encryption]


def manifest_blob_keys(manifest: dict, schema: str, uid: uuid.UUID | str) -> set[str]:
    """The blob keys a backup's manifest lists (none for a backup without files)."""
    files = (manifest or {}).get("files") or {}
    encoding = files.get("encoding") or {}
    keys = set()
    for entry in files.get("entries") or ():
        try:
            keys.add(blob_key(schema, uid, entry["sha256"], compression=encoding.get("compression", "none"),
                              encryption=encoding.get("encryption", "")))
        except (KeyError, TypeError, ValueError):
            continue
    return keys


def referenced_blob_keys(schema: str, uid: uuid.UUID | str) -> set[str]:
    """Every blob some record of the identity lists, whatever its state except `deleting` (a record being
    deleted no longer keeps its blobs; a running backup's blobs are kept by the tenant's lock instead)."""
    keys: set[str] = set()
    records = (BackupRecord.objects.filter(tenant_uid=uid, schema_name=schema)
               .exclude(stage=BackupRecord.Stage.DELETING).values_list("manifest", flat=True))
    for manifest in records.iterator():
        keys |= manifest_blob_keys(manifest, schema, uid)
    return keys


def _blobs_of_unrecorded_manifests(storage: Storage, stored: list[str], schema: str, uid: uuid.UUID | str
                                   ) -> set[str]:
    """The blobs listed by signed manifests in the storage whose backup has no record (a catalog restored from an
    older dump, before reconcile imported them): they are kept too, so a sweep never takes what reconcile would
    bring back."""
    recorded = set(BackupRecord.objects.filter(tenant_uid=uid).values_list("storage_key", flat=True))
    keys: set[str] = set()
    for key in stored:
        if not key.endswith(MANIFEST_SUFFIX) or key.removesuffix(MANIFEST_SUFFIX) in recorded:
            continue
        try:
            manifest = json.loads(storage.get_bytes(key))
        except (StorageError, ValueError, UnicodeDecodeError):
            continue
        if manifest_signature_valid(manifest) and manifest.get("tenant_uid") == str(uid):
            keys |= manifest_blob_keys(manifest, schema, uid)
    return keys


def confirmed_blob_keys(storage: Storage, schema: str, uid: uuid.UUID | str) -> tuple[set[str], set[str]]:
    """(blobs a backup may count on, blobs present but no manifest lists yet). Blobs are made durable together
    just before the manifest listing them is written, so one no manifest lists may be the remains of a crash
    (a power loss before that sync): a backup stores such a blob again instead of counting on it."""
    stored = [o.key for o in storage.list(tenant_prefix(schema, uid))]
    prefix = blob_prefix(schema, uid)
    blobs = {key for key in stored if key.startswith(prefix)}
    listed = referenced_blob_keys(schema, uid) | _blobs_of_unrecorded_manifests(storage, stored, schema, uid)
    return blobs & listed, blobs - listed


def file_blobs_sweep(*, storage: Storage, schema: str, uid: uuid.UUID | str) -> int | None:
    """Delete the identity's blobs no record lists any more; the count, or None when a backup or restore of the
    tenant holds its lock (the next sweep does it).

    Crash-safe without a mark of its own: it runs under the tenant's lock, which every backup holds while it
    stores blobs and writes the manifest that lists them, so no blob a backup counts on is unreferenced while the
    sweep looks; records are deleted (marked `deleting` first) before their blobs, and a crash between
    leaves blobs no record lists, which the next sweep deletes.
    """
    try:
        with tenant_lock(schema, what="removing unreferenced file blobs"):
            keep = referenced_blob_keys(schema, uid)
            stored = [o.key for o in storage.list(tenant_prefix(schema, uid))]
            keep |= _blobs_of_unrecorded_manifests(storage, stored, schema, uid)
            prefix = blob_prefix(schema, uid)
            doomed = [key for key in stored if key.startswith(prefix) and key not in keep]
            for key in doomed:
                storage.delete(key)
    except TenantBusy:
        return None
    if doomed:
        logger.info("removed %d unreferenced file blobs of %s (%s)", len(doomed), schema, uid)
    return len(doomed)
