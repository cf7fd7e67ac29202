"""The local writer syncs in the background while writing, and never leaves a partial file behind."""

import errno
import os

import pytest

from backups.storage import local
from backups.storage.local import PARTIAL_PREFIX, LocalWriter


class SmallSyncWriter(LocalWriter):
    sync_every = 64 << 10


def _chunks(n: int = 40, size: int = 16 << 10) -> list[bytes]:
    return [os.urandom(size) for _ in range(n)]


def test_background_syncs_run_while_writing_and_the_file_is_whole(tmp_path, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(local.os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    target = tmp_path / "t" / "backup.sql.zst"
    writer = SmallSyncWriter(target)
    chunks = _chunks()
    for chunk in chunks:
        writer.write(chunk)
    writer.commit()
    assert target.read_bytes() == b"".join(chunks)
    assert calls  # a sync ran beside the writes (one more starts every 64 KiB once the previous one is done)
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def test_a_failed_background_sync_fails_the_commit_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local.os, "fdatasync", full)
    target = tmp_path / "t" / "backup.sql.zst"
    writer = SmallSyncWriter(target)
    for chunk in _chunks():
        writer.write(chunk)
    with pytest.raises(OSError) as raised:
        writer.commit()
    assert raised.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []


def test_abort_while_a_sync_runs_removes_the_partial_file(tmp_path):
    target = tmp_path / "t" / "backup.sql.zst"
    writer = SmallSyncWriter(target)
    for chunk in _chunks(8):
        writer.write(chunk)
    writer.abort()
    writer.abort()
    assert list(target.parent.iterdir()) == []


def test_a_short_write_is_completed_not_lost(tmp_path):
    """A nearly full disk makes os.write return fewer bytes than asked; none may be dropped."""

    class ShortWrites:
        def __init__(self, file) -> None:
            self.real = file

        def write(self, data) -> int:
            return self.real.write(bytes(data[:3]))

        def __getattr__(self, name):
            return getattr(self.real, name)

    writer = LocalWriter(tmp_path / "x.sql")
    writer.file = ShortWrites(writer.file)
    writer.write(b"0123456789")
    writer.file = writer.file.real
    writer.commit()
    assert (tmp_path / "x.sql").read_bytes() == b"0123456789"


def test_every_folder_an_object_needs_is_private(tmp_path):
    storage = local.LocalStorage(tmp_path / "root")
    storage.put_bytes("clinica_demo/0b5a1c2e-uid/backup-sql-clinica_demo.sql.zst", b"data")
    for folder in ("root", "root/clinica_demo", "root/clinica_demo/0b5a1c2e-uid"):
        assert oct((tmp_path / folder).stat().st_mode & 0o777) == "0o700", folder  # tenants' names and files
    storage.put_bytes("clinica_demo/0b5a1c2e-uid/second.sql.zst", b"more")  # folders that exist are fine
    assert (tmp_path / "root/clinica_demo/0b5a1c2e-uid/second.sql.zst").read_bytes() == b"more"
