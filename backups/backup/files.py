"""The files stage of a backup: what Django's storage holds for the tenant, stored by content beside its dump.

Read through the Storage API inside the tenant's schema (django-tenants' TenantFileSystemStorage keeps
`MEDIA_ROOT/<schema>/`; an S3 storage with a per-tenant location works the same; BACKUPS_FILES_STORAGE names
another), so a host's media storage needs nothing of its own. Each file's SHA-256 names a blob of the tenant
identity (backups.catalog.file_blobs); a blob already stored is not stored again, and a file whose path, size and
modification time equal the tenant's previous backup's entry is not even read (its digest is taken from that
entry, as rsync and restic do). New blobs are compressed and encrypted as the record's dump is.

Consistency window: files are listed after the database snapshot was taken (the stage runs once the dump is
written), so a file saved while the dump ran may be in the backup with no row pointing to it, and a file deleted
meanwhile is missing while its row is there. A file that changes while it is read is read again (three times at
most, then the backup fails naming it).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.storage import Storage as DjangoStorage
from django.utils import timezone
from django_tenants.files.storage import TenantFileSystemStorage
from django_tenants.utils import get_public_schema_name, schema_context

from backups import conf
from backups.catalog.file_blobs import blob_key, confirmed_blob_keys
from backups.conf import backups_settings
from backups.core.compression import make_compressor
from backups.core.encryption import AgeEncryptor
from backups.core.errors import BackupError
from backups.models import BackupRecord
from backups.storage import Storage

logger = logging.getLogger(__name__)
READ_SIZE = 1 << 20
READ_ATTEMPTS = 3


def tenant_file_storage() -> DjangoStorage:
    """The storage of the tenant whose schema Django is on (call inside its schema_context)."""
    factory = backups_settings.BACKUPS_FILES_STORAGE
    return factory() if factory else default_storage


def per_tenant(fs: DjangoStorage) -> bool:
    """Whether the storage keeps each tenant's files apart. Django's own FileSystemStorage keeps one MEDIA_ROOT for
    all of them, so backing it up per tenant would copy every tenant's files into each one's backup: it is left
    out (a host project using it sets BACKUPS_FILES_STORAGE to a per-tenant one)."""
    return not (isinstance(fs, FileSystemStorage) and not isinstance(fs, TenantFileSystemStorage))


def files_wanted(record: BackupRecord) -> bool:
    """Whether the record's backup carries the tenant's files (BACKUPS_FILES, a per-tenant storage; never the
    public schema's)."""
    if not backups_settings.BACKUPS_FILES or record.schema_name == get_public_schema_name():
        return False
    with schema_context(record.schema_name):
        fs = tenant_file_storage()
        if not per_tenant(fs):
            logger.warning("tenant files not backed up: %s is not per tenant (set BACKUPS_FILES_STORAGE)",
                           type(fs).__name__)
            return False
    return True


def walk(fs: DjangoStorage, path: str = "") -> Iterator[str]:
    """Every file name under `path`, sorted, through Storage.listdir only."""
    dirs, files = fs.listdir(path)
    for name in sorted(files):
        yield posixpath.join(path, name) if path else name
    for name in sorted(dirs):
        yield from walk(fs, posixpath.join(path, name) if path else name)


def _mtime(fs: DjangoStorage, name: str) -> str | None:
    try:
        return fs.get_modified_time(name).isoformat()
    except (NotImplementedError, OSError, AttributeError, ValueError):
        return None


def file_digest(fs: DjangoStorage, name: str) -> tuple[str, int]:
    """SHA-256 and size of a file of the tenant's storage, read once."""
    digest, size = hashlib.sha256(), 0
    with fs.open(name, "rb") as f:
        while data := f.read(READ_SIZE):
            digest.update(data)
            size += len(data)
    return digest.hexdigest(), size


def _previous_entries(record: BackupRecord, encoding: dict) -> dict[str, dict]:
    """path -> entry of the tenant's newest earlier backup with files in the same encoding (the digest cache)."""
    earlier = (BackupRecord.objects.filter(tenant_uid=record.tenant_uid, schema_name=record.schema_name,
                                           status=BackupRecord.Status.SUCCEEDED, manifest__files__isnull=False)
               .exclude(pk=record.pk).order_by("-created_at", "-id").values_list("manifest", flat=True).first())
    files = (earlier or {}).get("files") or {}
    if files.get("encoding") != encoding:
        return {}
    return {e["path"]: e for e in files.get("entries") or () if isinstance(e, dict) and "path" in e}


def _store_blob(fs: DjangoStorage, name: str, key: str, sha256: str, storage: Storage, record: BackupRecord) -> int:
    """Store the file's content at `key`, compressed and encrypted as the record; stored bytes. Raises
    ChangedWhileRead when what was read is not the content `sha256` names (nothing is committed then).

    A lean loop, not the dump's BackupSink: most files are smaller than one of its chunks, and its helper thread
    cost more than the compression here; the blobs themselves are stored BACKUPS_FILES_THREADS at a time."""
    compressor = make_compressor(
        record.compression, zstd_level=backups_settings.BACKUPS_ZSTD_LEVEL, zstd_threads=1,
        gzip_level=backups_settings.BACKUPS_GZIP_LEVEL)
    transforms = (AgeEncryptor(conf.age_recipients()),) if record.encryption == "age" else ()
    digest, stored = hashlib.sha256(), 0
    writer = storage.open_write_batched(key)
    try:
        with fs.open(name, "rb") as f:
            while True:
                data = f.read(READ_SIZE)
                out = compressor.compress(data) if data else compressor.flush()
                digest.update(data)
                for transform in transforms:
                    out = transform.update(out) + (b"" if data else transform.finish())
                if out:
                    writer.write(out)
                    stored += len(out)
                if not data:
                    break
        if digest.hexdigest() != sha256:
            raise ChangedWhileRead(name)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return stored


class ChangedWhileRead(BackupError):
    """A file's content changed between two reads of the same backup."""


def _describe(fs: DjangoStorage, name: str, known: dict | None) -> dict:
    """The file's manifest entry: its digest from the previous backup's entry when path, size and mtime match (the
    content is not read), else read."""
    size, mtime = fs.size(name), _mtime(fs, name)
    if known and mtime and known.get("size") == size and known.get("mtime") == mtime:
        return {"path": name, "size": size, "sha256": known["sha256"], "mtime": mtime}
    sha256, size = file_digest(fs, name)
    return {"path": name, "size": size, "sha256": sha256, "mtime": mtime}


def files_backup(*, record: BackupRecord, storage: Storage) -> dict[str, Any] | None:
    """The manifest's `files` section of the record's backup, after storing the blobs it lacks; None when the
    backup carries no files."""
    if not files_wanted(record):
        return None
    schema, uid = record.schema_name, record.tenant_uid
    encoding = {"compression": record.compression, "encryption": record.encryption}
    previous = _previous_entries(record, encoding)
    existing, unconfirmed = confirmed_blob_keys(storage, schema, uid)
    listed_at = timezone.now().isoformat()
    with schema_context(schema):
        fs = tenant_file_storage()
        entries = [_describe(fs, name, previous.get(name)) for name in walk(fs)]
    key_of = lambda entry: blob_key(schema, uid, entry["sha256"], **encoding)  # noqa: E731
    lock = threading.Lock()
    stored = {"blobs": 0, "bytes": 0}

    def store(entry: dict) -> None:
        """Store the entry's blob unless it exists; a file that changed is described again and stored anew."""
        with schema_context(schema):  # the tenant's storage resolves its location on this thread's connection
            fs = tenant_file_storage()
            for _attempt in range(READ_ATTEMPTS):
                key = key_of(entry)
                with lock:
                    if key in existing:
                        return
                if key in unconfirmed:  # present, but no manifest lists it: maybe a crash's remains
                    storage.delete(key)
                try:
                    size = _store_blob(fs, entry["path"], key, entry["sha256"], storage, record)
                except ChangedWhileRead:
                    entry.update(_describe(fs, entry["path"], None))
                    continue
                with lock:
                    existing.add(key)
                    stored["blobs"] += 1
                    stored["bytes"] += size
                return
        raise BackupError(f"The file {entry['path']!r} of {schema} kept changing while it was read "
                          f"({READ_ATTEMPTS} attempts); the backup was not kept.")

    firsts = {}  # one entry per new content: two paths with one content would store it twice at once
    for entry in entries:
        if key_of(entry) not in existing:
            firsts.setdefault(key_of(entry), entry)
    # the threads never query the database: schema_context only names the schema the storage resolves paths for
    with ThreadPoolExecutor(max_workers=max(1, int(backups_settings.BACKUPS_FILES_THREADS)),
                            thread_name_prefix="files") as pool:
        for future in [pool.submit(store, entry) for entry in firsts.values()]:
            future.result()
    for entry in entries:  # a twin of a file that changed while it was stored
        if key_of(entry) not in existing:
            store(entry)
    if stored["blobs"]:
        storage.sync_batched()  # every new blob durable before the manifest listing them is written
    logger.info("files of %s: %d listed, %d new blobs (%d bytes stored)", schema, len(entries), stored["blobs"],
                stored["bytes"])
    return {"encoding": encoding, "listed_at": listed_at, "entries": entries, "count": len(entries),
            "bytes": sum(e["size"] for e in entries), "new_blobs": stored["blobs"], "new_bytes": stored["bytes"]}
