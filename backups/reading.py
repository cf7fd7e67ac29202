"""Reading a stored backup back: stored bytes checked against the record's SHA-256 while they stream."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from .compression import open_decompressed
from .errors import VerificationFailed
from .storage import Storage


class HashingReader:
    """Passes reads through and hashes what went by."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.hash.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Hash whatever the consumer left unread (a decompressor may stop before the last bytes)."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        self.raw.close()


class PlainStream:
    """The decompressed bytes of a backup, plus `verify()` for the stored checksum once fully read."""

    def __init__(self, raw: BinaryIO, compression: str, sha256: str, size: int | None, encryption: str = "") -> None:
        self.hashing = HashingReader(raw)
        source = self.hashing
        if encryption == "age":
            from . import conf
            from .encryption import AgeDecryptingReader, load_identities

            source = AgeDecryptingReader(self.hashing, load_identities(conf.get("BACKUPS_AGE_IDENTITY_FILE")))
        elif encryption:
            raise VerificationFailed(f"Unknown encryption {encryption!r}.")
        self.plain = open_decompressed(source, compression)
        self.expected_sha256, self.expected_size = sha256, size

    def read(self, size: int = -1) -> bytes:
        return self.plain.read(size)

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """Iterate the plain bytes."""
        while data := self.plain.read(size):
            yield data

    def lines(self) -> Iterator[str]:
        """Iterate UTF-8 lines without holding more than one chunk and one line."""
        rest = b""
        for chunk in self.chunks():
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for part in parts:
                yield part.decode("utf-8")
        if rest:
            yield rest.decode("utf-8")

    def verify(self) -> None:
        """Raise VerificationFailed unless the stored bytes match the record."""
        self.hashing.drain()
        if self.expected_size is not None and self.hashing.size != self.expected_size:
            raise VerificationFailed(f"The stored backup has {self.hashing.size} bytes, the record says "
                                     f"{self.expected_size}: it is damaged.")
        if self.expected_sha256 and self.hashing.hash.hexdigest() != self.expected_sha256:
            raise VerificationFailed("The stored backup's SHA-256 does not match the record: it is damaged.")


@contextlib.contextmanager
def open_backup(storage: Storage, record) -> Iterator[PlainStream]:
    """Open a record's object as a checked plain stream."""
    raw = storage.open_read(record.storage_key)
    try:
        yield PlainStream(raw, record.compression, record.sha256, record.size, record.encryption)
    finally:
        raw.close()
