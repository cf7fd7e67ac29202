"""A backup's files read back: put into the tenant's storage by a replace restore, checked by a verify drill.

Every blob is decoded (decrypted, decompressed) into a private temporary file while it is hashed, and only a
content whose SHA-256 equals the signed manifest's entry reaches the tenant's storage. A replace brings the
storage to the backup's state: files the backup lists are written (unless the live one already has that content),
files it does not list are deleted; the safety backup taken before the replace holds what was there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import IO

from django.core.files import File
from django_tenants.utils import schema_context

from backups.backup.files import file_digest, tenant_file_storage, walk
from backups.catalog.file_blobs import blob_key
from backups.catalog.records import backup_record_mark_damaged
from backups.core.errors import RestoreFailed, StoredObjectDamaged
from backups.models import BackupRecord
from backups.storage import Storage, StorageError
from backups.storage.reading import PlainStream
from backups.storage.spools import spool_dir

logger = logging.getLogger(__name__)
READ_SIZE = 1 << 20


def backup_files(record: BackupRecord) -> tuple[list[dict], dict] | None:
    """(entries, encoding) of the record's files, or None when its backup carries none."""
    files = (record.manifest or {}).get("files")
    if not isinstance(files, dict):
        return None
    return list(files.get("entries") or ()), dict(files.get("encoding") or {})


@contextlib.contextmanager
def decoded_blob(storage: Storage, record: BackupRecord, entry: dict, encoding: dict) -> Iterator[IO[bytes]]:
    """The entry's content in a temporary file, read from its blob and checked against the entry's SHA-256 and
    size; StoredObjectDamaged when the blob is missing, cannot be decoded or holds other bytes."""
    key = blob_key(record.schema_name, record.tenant_uid, entry["sha256"],
                   compression=encoding.get("compression", "none"), encryption=encoding.get("encryption", ""))
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile(dir=spool_dir()) as out:
        try:
            raw = storage.open_read(key)
            try:
                plain = PlainStream(raw, encoding.get("compression", "none"), encoding.get("encryption", ""))
                for data in plain.chunks(READ_SIZE):
                    digest.update(data)
                    size += len(data)
                    out.write(data)
            finally:
                with contextlib.suppress(Exception):
                    raw.close()
        except StorageError as exc:
            raise StoredObjectDamaged(f"The file {entry['path']!r} cannot be read from its blob {key}: {exc}") from None
        except (OSError, ValueError, EOFError) as exc:
            raise StoredObjectDamaged(f"The blob {key} of {entry['path']!r} cannot be decoded: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a decryption or decompression error of any library
            raise StoredObjectDamaged(f"The blob {key} of {entry['path']!r} cannot be decoded: {exc}") from None
        if digest.hexdigest() != entry["sha256"] or size != entry.get("size", size):
            raise StoredObjectDamaged(f"The blob {key} does not hold the content of {entry['path']!r} its manifest "
                                      "lists (SHA-256 or size differ).")
        out.seek(0)
        yield out


def files_restore(*, record: BackupRecord, storage: Storage) -> dict[str, int]:
    """Bring the tenant's storage to the backup's files; counts written, kept (already equal) and deleted."""
    listed = backup_files(record)
    if listed is None:
        return {}
    entries, encoding = listed
    counts = {"written": 0, "kept": 0, "deleted": 0}
    wanted = {e["path"] for e in entries}
    with schema_context(record.schema_name):
        fs = tenant_file_storage()
        live = set(walk(fs))
        for entry in entries:
            name = entry["path"]
            if name in live and fs.size(name) == entry["size"] and file_digest(fs, name)[0] == entry["sha256"]:
                counts["kept"] += 1
                continue
            with decoded_blob(storage, record, entry, encoding) as content:
                if fs.exists(name):
                    fs.delete(name)
                saved = fs.save(name, File(content, name=name))
            if saved != name:
                raise RestoreFailed(f"The tenant's storage saved {name!r} as {saved!r}.")
            counts["written"] += 1
        for name in sorted(live - wanted):
            fs.delete(name)
            counts["deleted"] += 1
    logger.info("files of %s restored from backup %s: %s", record.schema_name, record.pk, counts)
    return counts


def files_tar_chunks(*, record: BackupRecord, storage: Storage) -> Iterator[bytes]:
    """The backup's files as an uncompressed tar archive (PAX headers: any path, any size), streamed member by
    member: each content is checked against its SHA-256 before its first byte is sent, so a damaged blob ends the
    archive early (and marks the backup damaged), never with another file's bytes."""
    entries, encoding = backup_files(record) or ([], {})
    for entry in entries:
        try:
            blob = decoded_blob(storage, record, entry, encoding)
            content = blob.__enter__()
        except StoredObjectDamaged as exc:
            backup_record_mark_damaged(record=record, error=str(exc))
            raise
        try:
            info = tarfile.TarInfo(entry["path"])
            info.size, info.mode = entry["size"], 0o644
            with contextlib.suppress(TypeError, ValueError):
                info.mtime = int(datetime.fromisoformat(entry.get("mtime") or "").timestamp())
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            while data := content.read(READ_SIZE):
                yield data
            if entry["size"] % tarfile.BLOCKSIZE:
                yield tarfile.NUL * (tarfile.BLOCKSIZE - entry["size"] % tarfile.BLOCKSIZE)
        finally:
            blob.__exit__(None, None, None)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


def files_verify(*, record: BackupRecord, storage: Storage) -> tuple[int, list[str]]:
    """Decode every file of the backup and check its digest: (files checked, what failed)."""
    listed = backup_files(record)
    if listed is None:
        return 0, []
    entries, encoding = listed
    problems = []
    for entry in entries:
        try:
            with decoded_blob(storage, record, entry, encoding):
                pass
        except StoredObjectDamaged as exc:
            problems.append(str(exc))
    return len(entries), problems
