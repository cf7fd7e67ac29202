"""A backup's plain bytes (decrypted, decompressed) streamed to a client, checked as they go.

The source documents' clients ask `create/?download=true` for the dump itself (`.sql`), not the stored
`.sql.zst[.age]` object. Nothing is spooled: the stored bytes are hashed as the decoder reads them, the plain
bytes as they leave, and the last plain chunk is held back until both digests (and sizes) matched what the
record says, so a damaged object ends the response short of its Content-Length, never cleanly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from backups.catalog.records import backup_record_mark_damaged
from backups.conf import backups_settings
from backups.core.compression import open_decompressed
from backups.core.errors import VerificationFailed
from backups.core.naming import COMPRESSION_EXT, ENCRYPTION_EXT, FORMAT_EXT
from backups.core.service_errors import ConflictError, NotFoundError
from backups.models import BackupRecord
from backups.storage import ObjectNotFound, Storage, StorageError

logger = logging.getLogger(__name__)

# What the documents call the files: a plain dump is `.sql`, dumpdata output `.json`.
PLAIN_EXT = {"sql": ".sql", "dump": ".dump", "json": ".json"}


class _HashingReader:
    """Counts and hashes every stored byte the decoder reads."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.total += len(data)
        return data

    def drain(self, size: int) -> None:
        """Read (and hash) what the decoder left, such as trailing bytes after the last frame."""
        while self.read(size):
            pass

    def close(self) -> None:
        self.raw.close()


@dataclass
class PlainObject:
    """A succeeded record's object opened for a plain download."""

    record: BackupRecord
    stored: _HashingReader
    plain: BinaryIO
    file_name: str


def plain_file_name(record: BackupRecord) -> str:
    """The record's file name without its compression and encryption suffixes, with the documents' extension."""
    name = record.file_name
    suffix = "." + FORMAT_EXT[record.format] + COMPRESSION_EXT[record.compression] + ENCRYPTION_EXT[record.encryption]
    stem = name[: -len(suffix)] if name.endswith(suffix) else name.rsplit(".", 1)[0]
    return stem + PLAIN_EXT.get(record.format, "." + FORMAT_EXT[record.format])


def api_plain_open(*, record: BackupRecord, storage: Storage) -> PlainObject:
    """Open a succeeded record's object and its decoder (an age identity on this process for encrypted ones)."""
    if record.status != BackupRecord.Status.SUCCEEDED or not record.sha256:
        raise ConflictError(f"Backup {record.pk} is {record.status}; only a succeeded backup can be downloaded.")
    try:
        raw = storage.open_read(record.storage_key)
    except ObjectNotFound:
        raise NotFoundError(f"The stored object of backup {record.pk} is missing.") from None
    stored = _HashingReader(raw)
    try:
        source: BinaryIO = stored  # type: ignore[assignment]
        if record.encryption == "age":
            from backups.catalog.tenant_keys import identities_for
            from backups.core.encryption import AgeDecryptingReader

            source = AgeDecryptingReader(stored, identities_for(record, storages=[storage]))
        elif record.encryption:
            raise VerificationFailed(f"Unknown encryption {record.encryption!r}.")
        plain = open_decompressed(source, record.compression)
    except BaseException:
        stored.close()
        raise
    return PlainObject(record=record, stored=stored, plain=plain, file_name=plain_file_name(record))


def api_plain_chunks(opened: PlainObject, *, chunk_size: int | None = None) -> Iterator[bytes]:
    """The plain bytes chunk by chunk; raises VerificationFailed instead of yielding the last chunk of a bad object."""
    size = int(chunk_size or backups_settings.BACKUPS_STREAM_CHUNK_BYTES)
    record = opened.record
    plain_digest = hashlib.sha256()
    plain_total = 0
    held: bytes | None = None
    decode_error: Exception | None = None
    try:
        try:
            while data := opened.plain.read(size):
                plain_digest.update(data)
                plain_total += len(data)
                if record.plain_size is not None and plain_total > record.plain_size:
                    raise VerificationFailed(f"more than the recorded {record.plain_size} plain bytes")
                if held is not None:
                    yield held
                held = data
            opened.stored.drain(size)
        except StorageError:
            raise  # the storage failed, the object is not known to be bad
        except Exception as exc:  # noqa: BLE001 - a decoder's error: the object's digest says whether it is bad
            decode_error = exc
            opened.stored.drain(size)
        problem = _mismatch(record, opened.stored, plain_digest.hexdigest(), plain_total, decode_error)
        if problem:
            logger.error("plain download of backup %s aborted: %s", record.pk, problem)
            if opened.stored.digest.hexdigest() != record.sha256 or opened.stored.total != record.size:
                backup_record_mark_damaged(record=record, error=f"Download check: {problem}.")
            raise VerificationFailed(f"{opened.file_name}: {problem}; the download was aborted.")
        if held is not None:
            yield held
    finally:
        opened.stored.close()


def _mismatch(record: BackupRecord, stored: _HashingReader, plain_sha256: str, plain_size: int,
              decode_error: Exception | None) -> str:
    if record.size is not None and stored.total != record.size:
        return f"the stored object has {stored.total} bytes, expected {record.size}"
    if stored.digest.hexdigest() != record.sha256:
        return f"the stored object's SHA-256 is {stored.digest.hexdigest()}, expected {record.sha256}"
    if decode_error is not None:
        return f"it could not be decoded ({decode_error})"
    if record.plain_size is not None and plain_size != record.plain_size:
        return f"it decoded to {plain_size} bytes, expected {record.plain_size}"
    if record.plain_sha256 and plain_sha256 != record.plain_sha256:
        return f"its plain SHA-256 is {plain_sha256}, expected {record.plain_sha256}"
    return ""
