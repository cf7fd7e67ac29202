"""A restore's download cut by the network resumes from the byte it stopped at (issue 22, part 6)."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import pytest

from backups.core.errors import StoredObjectDamaged
from backups.storage import StorageTransientError, reading

DATA = bytes(range(256)) * 12_000  # about 3 MiB: several COPY_CHUNK reads


class CutStorage:
    """Serves DATA; the first `cuts` reads each fail after `every` bytes, as a reset or a stall past the timeout."""

    def __init__(self, cuts: int, every: int = 1 << 20, data: bytes = DATA) -> None:
        self.cuts, self.every, self.data, self.offsets = cuts, every, data, []

    def open_read(self, key: str, offset: int = 0):
        self.offsets.append(offset)
        storage = self

        class Stream(io.RawIOBase):
            sent = 0

            def readable(self):
                return True

            def read(self, size=-1):
                if storage.cuts and self.sent >= storage.every:
                    storage.cuts -= 1
                    raise StorageTransientError("The connection failed while reading (Read timeout).")
                chunk = storage.data[offset + self.sent: offset + self.sent + min(size, storage.every)]
                self.sent += len(chunk)
                return chunk

        return Stream()


def _record(data: bytes = DATA):
    return SimpleNamespace(pk=1, storage_key="clinic/x.sql.gz", size=len(data), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch):
    monkeypatch.setattr(reading.time, "sleep", lambda seconds: None)


def test_a_cut_read_resumes_where_it_stopped_and_the_digest_still_covers_every_byte(settings):
    settings.BACKUPS_READ_ATTEMPTS = 5
    storage, out = CutStorage(cuts=2), io.BytesIO()
    reading.spool_verified(storage, _record(), out)
    assert out.getvalue() == DATA
    assert storage.offsets == [0, 1 << 20, 2 << 20]  # never from the start again


def test_a_read_cut_more_often_than_allowed_fails_with_the_storage_message(settings):
    settings.BACKUPS_READ_ATTEMPTS = 2
    with pytest.raises(StorageTransientError, match="Read timeout"):
        reading.spool_verified(CutStorage(cuts=5, every=1_000_000), _record(), io.BytesIO())


def test_a_resumed_read_of_a_tampered_object_is_still_refused(settings):
    settings.BACKUPS_READ_ATTEMPTS = 5
    tampered = DATA[:-1] + b"\x00"
    with pytest.raises(StoredObjectDamaged):
        reading.spool_verified(CutStorage(cuts=1, data=tampered), _record(), io.BytesIO())
