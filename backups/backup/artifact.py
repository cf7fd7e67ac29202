"""A backup's stored artifact, written the same way whoever made the dump (one tenant's pg_dump, a batch's member):
compressed and encrypted as its record says, streamed into its object, committed or aborted, then its signed
manifest stored beside it and the object's size confirmed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from backups import conf
from backups.backup.files import files_backup
from backups.catalog.manifest import build_manifest, manifest_bytes, manifest_key, sign_manifest
from backups.catalog.object_lock import locks, retain_until_for
from backups.catalog.records import backup_record_set_locked_until
from backups.catalog.tenant_keys import envelope_manifest, tenant_key_for
from backups.conf import backups_settings
from backups.core.compression import make_compressor
from backups.core.encryption import AgeEncryptor, recipients_fingerprint
from backups.core.errors import BackupError
from backups.models import BackupRecord
from backups.postgres.dumpers import DumpInfo
from backups.storage import ObjectLocked, Storage
from backups.storage.sink import BackupSink, SinkResult

logger = logging.getLogger(__name__)


class Artifact:
    """The open sink of one record's object; `result` once the block ended without an error."""

    def __init__(self, sink: BackupSink, retain_until: datetime | None = None) -> None:
        self.sink = sink
        self.result: SinkResult | None = None
        self.retain_until = retain_until

    def write(self, data: bytes) -> None:
        self.sink.write(data)


@contextlib.contextmanager
def artifact_writer(record: BackupRecord, storage: Storage, *, on_progress: Callable[[int], None] | None = None,
                    progress_every: int | None = None) -> Iterator[Artifact]:
    """Write the record's object: plain bytes in, compressed (and age-encrypted) out; committed when the block
    ends, aborted (nothing left behind) when it raises."""
    compressor = make_compressor(
        record.compression, zstd_level=backups_settings.BACKUPS_ZSTD_LEVEL,
        zstd_threads=backups_settings.BACKUPS_ZSTD_THREADS, gzip_level=backups_settings.BACKUPS_GZIP_LEVEL)
    transforms: tuple = ()
    record.data_key = None  # store_and_confirm names it in the manifest
    if record.encryption == "age" and backups_settings.BACKUPS_TENANT_KEYS:
        record.data_key = tenant_key_for(record=record, storages=[storage])  # the copy target's: backup_copy
        transforms = (AgeEncryptor([record.data_key.recipient]),)
    elif record.encryption == "age":
        transforms = (AgeEncryptor(conf.age_recipients()),)
    retain_until = retain_until_for(record) if locks(storage) else None
    record.locked_until = retain_until  # store_and_confirm locks the manifest as long, and records the date
    writer = storage.open_write(record.storage_key, retain_until=retain_until) if retain_until else \
        storage.open_write(record.storage_key)
    try:
        extra = {"on_progress": on_progress, "progress_every": progress_every} if on_progress else {}
        artifact = Artifact(BackupSink(writer, compressor, transforms=transforms, **extra), retain_until)
        yield artifact
        artifact.result = artifact.sink.finish()
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def store_and_confirm(record: BackupRecord, storage: Storage, info: DumpInfo, result: SinkResult) -> dict:
    """Store the tenant's files (the files stage: new blobs only), then the record's signed manifest listing them
    beside its committed object, and check the object's size; on any failure delete both (a record never
    succeeds without its object and manifest; blobs no manifest lists are removed by the next sweep). The
    manifest."""
    data_key = getattr(record, "data_key", None)
    encryption = (envelope_manifest(data_key) if data_key is not None else
                  {"method": "age", "recipients": recipients_fingerprint(conf.age_recipients())}
                  if record.encryption == "age" else {})
    retain_until = getattr(record, "locked_until", None) if locks(storage) else None
    try:
        files = files_backup(record=record, storage=storage)  # listed after the dump's snapshot (files.py)
        manifest = sign_manifest(build_manifest(record=record, info=info, result=result, encryption=encryption,
                                                files=files))
        if retain_until:
            storage.put_bytes(manifest_key(record.storage_key), manifest_bytes(manifest), retain_until=retain_until)
        else:
            storage.put_bytes(manifest_key(record.storage_key), manifest_bytes(manifest))
        stored = storage.stat(record.storage_key)
        if stored is None or stored.size != result.size:
            raise BackupError(
                f"The stored object has {stored.size if stored else 'no'} bytes, expected {result.size}."
            )
    except BaseException:
        for key in (record.storage_key, manifest_key(record.storage_key)):
            try:
                storage.delete(key)
            except ObjectLocked as exc:  # the failure that got here is the one to report
                logger.warning("could not delete %s after a failed backup: %s", key, exc)
        raise
    if retain_until:
        backup_record_set_locked_until(record=record, until=retain_until)
    return manifest
