"""A backup's stored artifact, written the same way whoever made the dump (one tenant's pg_dump, a batch's member):
compressed and encrypted as its record says, streamed into its object, committed or aborted, then its signed
manifest stored beside it and the object's size confirmed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from backups import conf
from backups.backup.files import files_backup
from backups.catalog.manifest import build_manifest, manifest_bytes, manifest_key, sign_manifest
from backups.conf import backups_settings
from backups.core.compression import make_compressor
from backups.core.encryption import AgeEncryptor, recipients_fingerprint
from backups.core.errors import BackupError
from backups.models import BackupRecord
from backups.postgres.dumpers import DumpInfo
from backups.storage import Storage
from backups.storage.sink import BackupSink, SinkResult


class Artifact:
    """The open sink of one record's object; `result` once the block ended without an error."""

    def __init__(self, sink: BackupSink) -> None:
        self.sink = sink
        self.result: SinkResult | None = None

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
    transforms = (AgeEncryptor(conf.age_recipients()),) if record.encryption == "age" else ()
    writer = storage.open_write(record.storage_key)
    try:
        extra = {"on_progress": on_progress, "progress_every": progress_every} if on_progress else {}
        artifact = Artifact(BackupSink(writer, compressor, transforms=transforms, **extra))
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
    encryption = ({"method": "age", "recipients": recipients_fingerprint(conf.age_recipients())}
                  if record.encryption == "age" else {})
    try:
        files = files_backup(record=record, storage=storage)  # listed after the dump's snapshot (files.py)
        manifest = sign_manifest(build_manifest(record=record, info=info, result=result, encryption=encryption,
                                                files=files))
        storage.put_bytes(manifest_key(record.storage_key), manifest_bytes(manifest))
        stored = storage.stat(record.storage_key)
        if stored is None or stored.size != result.size:
            raise BackupError(
                f"The stored object has {stored.size if stored else 'no'} bytes, expected {result.size}."
            )
    except BaseException:
        storage.delete(record.storage_key)
        storage.delete(manifest_key(record.storage_key))
        raise
    return manifest
