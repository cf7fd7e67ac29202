"""Reading a stored backup back, verify before execute: the stored bytes are spooled to a private temporary
file while they are hashed, and nothing is decoded (decrypted, decompressed, handed to psql, pg_restore or
the JSON loader) until the whole object's size and SHA-256 matched what the catalog recorded at backup time.

The storage is less trusted than the database: a tampered object is refused before any byte of it runs.
Spooling the stored (compressed, maybe encrypted) bytes keeps memory flat; the disk needs the object's
stored size free in BACKUPS_SPOOL_DIR, checked before the download starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backups.conf import backups_settings
from backups.core.compression import open_decompressed
from backups.core.errors import BackupConfigError, StoredObjectDamaged, VerificationFailed
from backups.storage import Storage, StorageTransientError
from backups.storage.spools import RESTORE_SPOOL, SPOOL_MARGIN, spool_create, spool_dir

logger = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20


class PlainStream:
    """The decoded (decrypted, decompressed) bytes of a spooled object whose stored digest already matched."""

    def __init__(self, spool: BinaryIO, compression: str, encryption: str = "", identities: list | None = None) -> None:
        self.spool = spool
        source: BinaryIO = spool
        if encryption == "age":
            from backups.core.encryption import AgeDecryptingReader, load_identities

            if identities is None:  # the deployment's; a tenant's data key comes from the caller (tenant_keys)
                identities = load_identities(backups_settings.BACKUPS_AGE_IDENTITY_FILE)
            source = AgeDecryptingReader(spool, identities)
        elif encryption:
            raise VerificationFailed(f"Unknown encryption {encryption!r}.")
        self.plain = open_decompressed(source, compression)

    def read(self, size: int = -1) -> bytes:
        return self.plain.read(size)

    def chunks(self, size: int = COPY_CHUNK) -> Iterator[bytes]:
        """Iterate the plain bytes."""
        while data := self.plain.read(size):
            yield data

    def prefetched(self, size: int = COPY_CHUNK, depth: int = 4) -> Iterator[bytes]:
        """The plain bytes, decoded by a thread `depth` chunks ahead: decompression (which releases the GIL)
        overlaps with the consumer's sends, as `zstd -dc | psql` overlaps in two processes."""
        ahead: queue.Queue = queue.Queue(maxsize=depth)
        stop = threading.Event()
        failure: list[BaseException] = []

        def put(item: bytes | None) -> bool:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for data in self.chunks(size):
                    if not put(data):
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                failure.append(exc)
            put(None)

        thread = threading.Thread(target=produce, name="tb-decode", daemon=True)
        thread.start()
        try:
            while (data := ahead.get()) is not None:
                yield data
            if failure:
                raise failure[0]
        finally:
            stop.set()
            thread.join()

    def lines(self) -> Iterator[str]:
        """Iterate UTF-8 lines without holding more than one chunk and one line."""
        for line in byte_lines(self.chunks()):
            yield line.decode("utf-8")


def byte_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split a chunked byte stream into lines (without their newline), holding one chunk and one line."""
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _check_free_space(directory: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise BackupConfigError(f"BACKUPS_SPOOL_DIR {directory} cannot be used: {exc.strerror or exc}.") from None
    if free < needed + SPOOL_MARGIN:
        raise BackupConfigError(
            f"Not enough free disk space in {directory} (BACKUPS_SPOOL_DIR) to check the backup before it is "
            f"restored: it needs {needed + SPOOL_MARGIN} bytes, {free} are free.")


def require_digest(record) -> None:
    """Refuse a record whose stored size or SHA-256 is not known: there would be nothing to check against."""
    if not record.sha256 or len(record.sha256) != 64 or record.size is None:
        raise VerificationFailed(f"Backup {record.pk} has no recorded SHA-256 and size, so its stored bytes "
                                 "cannot be checked; it is never restored.")


def spool_verified(storage: Storage, record, out: BinaryIO) -> None:
    """Copy the record's object into `out` while hashing; raise VerificationFailed unless size and SHA-256 match.

    Stops as soon as the object is longer than the record says, so a huge tampered object cannot fill the disk.
    A read cut by a reset or a stall (a transient storage error) resumes from the last byte received, up to
    BACKUPS_READ_ATTEMPTS reads in all, waiting 1, 2, 4 ... s between them; the digest covers every byte once.
    """
    require_digest(record)
    digest = hashlib.sha256()
    total = 0
    for attempt in range(1, backups_settings.BACKUPS_READ_ATTEMPTS + 1):
        try:
            raw = storage.open_read(record.storage_key, total) if total else storage.open_read(record.storage_key)
            try:
                while data := raw.read(COPY_CHUNK):
                    total += len(data)
                    if total > record.size:
                        raise StoredObjectDamaged(f"The stored backup {record.storage_key} is longer than the "
                                                 f"{record.size} bytes its record says: it is damaged or was "
                                                 "tampered with.")
                    digest.update(data)
                    out.write(data)
            finally:
                raw.close()
            break
        except StorageTransientError as exc:  # a reset or a stall: go on from the last byte received
            if attempt == backups_settings.BACKUPS_READ_ATTEMPTS:
                raise
            wait = min(2 ** (attempt - 1), 30)
            logger.warning("reading %s stopped at byte %d (%s); resuming in %d s", record.storage_key, total, exc, wait)
            time.sleep(wait)
    if total != record.size:
        raise StoredObjectDamaged(f"The stored backup {record.storage_key} has {total} bytes, its record says "
                                 f"{record.size}: it is damaged or was tampered with.")
    if digest.hexdigest() != record.sha256:
        raise StoredObjectDamaged(f"The stored backup {record.storage_key} does not match the SHA-256 recorded when it "
                                 "was made: it is damaged or was tampered with.")


class VerifiedBackup:
    """A spooled object whose size and SHA-256 matched the catalog; read its plain bytes as often as needed."""

    def __init__(self, spool: BinaryIO, compression: str, encryption: str, identities: list | None = None) -> None:
        self.spool, self.compression, self.encryption = spool, compression, encryption
        self.identities = identities

    def plain(self) -> PlainStream:
        """A fresh plain stream from the start of the spool (a pre-scan, then the load)."""
        self.spool.seek(0)
        return PlainStream(self.spool, self.compression, self.encryption, self.identities)


@contextlib.contextmanager
def open_backup(storage: Storage, record, identities: list | None = None) -> Iterator[VerifiedBackup]:
    """The record's object, spooled and verified; the spool file is removed on every exit.

    The spool is held with a flock while it is used, so a process that dies leaves a file the next clean-up
    removes (backups.storage.spools), and no clean-up ever removes a live one.
    """
    require_digest(record)
    directory = spool_dir()
    _check_free_space(directory, record.size)
    fd, path = spool_create(directory, RESTORE_SPOOL)  # mode 0600, locked until closed
    try:
        with os.fdopen(fd, "w+b") as spool:
            spool_verified(storage, record, spool)
            spool.flush()
            yield VerifiedBackup(spool, record.compression, record.encryption, identities)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
