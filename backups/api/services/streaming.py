"""Streaming a stored object to a client in chunks, checking its SHA-256 on the way.

The last chunk is held back until the whole object has been hashed: if the checksum (or the size)
differs, it is never sent and the iterator raises, so the response ends short of its Content-Length
and the client sees a broken download instead of a clean end of a damaged file.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NoReturn

from backups.catalog.manifest import read_manifest
from backups.catalog.records import backup_record_mark_damaged
from backups.catalog.sources import copy_stands_in, open_copy_stream, open_stream_or_copy
from backups.conf import backups_settings
from backups.core.errors import VerificationFailed
from backups.core.service_errors import NotFoundError
from backups.models import BackupRecord
from backups.storage import ObjectNotFound, Storage

logger = logging.getLogger(__name__)


@dataclass
class OpenedObject:
    """An object opened for download: the stream, and what the bytes must add up to."""

    stream: BinaryIO
    key: str
    file_name: str
    size: int | None
    sha256: str
    record: BackupRecord | None = None
    source: str = "primary"  # or "copy": the primary's object was missing or damaged, its checked copy is sent


def _manifest_checksum(storage: Storage, key: str) -> tuple[str, int | None]:
    """The stored SHA-256 and size the manifest beside an object records, if it has a readable one."""
    manifest = read_manifest(storage, key).manifest
    if manifest is None:  # no manifest, or not ours: the download goes on unchecked
        return "", None
    sha = manifest.get("sha256")
    size = manifest.get("size")
    return (sha if isinstance(sha, str) and len(sha) == 64 else ""), (size if isinstance(size, int) else None)


def api_object_open(*, storage: Storage, key: str, record: BackupRecord | None = None) -> OpenedObject:
    """Open `key` (checked to be the tenant's) with the checksum to verify: the record's, else the manifest's."""
    if record is not None and record.sha256:
        sha, size = record.sha256, record.size
    else:
        sha, size = _manifest_checksum(storage, key)
    source = "primary"
    try:
        gone = record is not None and (record.damaged_at or record.stage == BackupRecord.Stage.MISSING)
        if gone and record.storage_key == key and copy_stands_in(record):
            stream, source = open_copy_stream(record, "damaged" if record.damaged_at else "missing"), "copy"
        elif record is not None and record.storage_key == key:
            stream, source = open_stream_or_copy(record)
        else:
            stream = storage.open_read(key)
    except ObjectNotFound:
        raise NotFoundError("No stored backup object with this key." if record is None
                            else f"The stored object of backup {record.pk} is missing.") from None
    return OpenedObject(stream=stream, key=key, file_name=key.rsplit("/", 1)[-1], size=size, sha256=sha,
                        record=record, source=source)


def api_object_chunks(opened: OpenedObject, *, chunk_size: int | None = None) -> Iterator[bytes]:
    """The object's bytes, chunk by chunk; raises VerificationFailed instead of yielding the last chunk of a bad one."""
    size = int(chunk_size or backups_settings.BACKUPS_STREAM_CHUNK_BYTES)
    digest = hashlib.sha256()
    total = 0
    held: bytes | None = None
    try:
        while True:
            data = opened.stream.read(size)
            if not data:
                break
            digest.update(data)
            total += len(data)
            if opened.size is not None and total > opened.size:  # never send more than Content-Length promised
                _refuse(opened, f"the stored object has more than the expected {opened.size} bytes")
            if held is not None:
                yield held
            held = data
        problem = _mismatch(opened, digest.hexdigest(), total)
        if problem:
            _refuse(opened, problem)
        if held is not None:
            yield held
    finally:
        opened.stream.close()


def _refuse(opened: OpenedObject, problem: str) -> NoReturn:
    """End a download whose bytes failed their check: logged, the record marked damaged, the last chunk withheld."""
    logger.error("download of %s aborted: %s", opened.key, problem)
    if opened.record is not None and opened.source == "primary":
        backup_record_mark_damaged(record=opened.record, error=f"Download check: {problem}.")
    raise VerificationFailed(f"{opened.file_name}: {problem}; the download was aborted.")


def _mismatch(opened: OpenedObject, sha256: str, size: int) -> str:
    if opened.size is not None and size != opened.size:
        return f"the stored object has {size} bytes, expected {opened.size}"
    if opened.sha256 and sha256 != opened.sha256:
        return f"the stored object's SHA-256 is {sha256}, expected {opened.sha256}"
    return ""


def api_object_headers(opened: OpenedObject) -> dict[str, Any]:
    """Headers of a download response: the checksum clients can check, and the length when it is known."""
    headers: dict[str, Any] = {}
    if opened.source != "primary":
        headers["X-Backup-Source"] = opened.source  # the primary object is missing or damaged: its copy is sent
    if opened.sha256:
        headers["X-Backup-SHA256"] = opened.sha256
    if opened.size is not None:
        headers["Content-Length"] = str(opened.size)
    return headers
