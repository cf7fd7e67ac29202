"""Failed dumps leave a failed record with a message and nothing that looks like a backup."""

import errno
import threading
import time

import pytest

from backups.backup import run as backup_run_module
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import TransientBackupError
from backups.core.naming import with_suffix
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.postgres.locks import RECORD_NAMESPACE, lock_key
from backups.storage import get_storage
from backups.storage.local import LocalStorage, LocalWriter


def _objects_of(record: BackupRecord) -> list[str]:
    return [o.key for o in get_storage().list(record.schema_name + "/") if o.key.startswith(record.storage_key)]


def test_missing_schema_gives_a_failed_record_and_no_file():
    record = backup_record_create(schema_name="clinica_gone", fmt="sql")
    record = backup_run(record_id=record.pk)
    assert record.status == BackupRecord.Status.FAILED
    assert "clinica_gone" in record.error and "does not exist" in record.error
    assert list(get_storage().list("clinica_gone/")) == []


@pytest.mark.parametrize("fmt", ["json"])
def test_missing_schema_json_format_fails_too(fmt):
    record = backup_run(record_id=backup_record_create(schema_name="clinica_gone", fmt=fmt).pk)
    assert record.status == BackupRecord.Status.FAILED and "does not exist" in record.error


def test_pg_dump_killed_mid_run_leaves_a_record_to_retry_and_no_file():
    """Hold a lock pg_dump must wait for, terminate its connection while it waits, then release."""
    locker = pgtools.connect()
    locker.execute("LOCK TABLE clinica_demo.clinic_invoice IN ACCESS EXCLUSIVE MODE")
    killed = threading.Event()

    def kill_pg_dump() -> None:
        with pgtools.connect(autocommit=True) as admin:
            for _ in range(300):
                rows = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'LOCK TABLE%%'"
                ).fetchall()
                if rows:
                    admin.execute("SELECT pg_terminate_backend(%s)", (rows[0][0],))
                    killed.set()
                    break
                time.sleep(0.05)
        locker.rollback()
        locker.close()

    thread = threading.Thread(target=kill_pg_dump)
    thread.start()
    record = backup_record_create(schema_name="clinica_demo", fmt="sql")
    with pytest.raises(TransientBackupError):  # the server dropped pg_dump, as a restart does: tried again
        backup_run(record_id=record.pk)
    thread.join()
    record.refresh_from_db()
    assert killed.is_set()
    assert record.status == BackupRecord.Status.QUEUED
    assert record.error.startswith("pg_dump exited with status 1")
    assert "terminat" in record.error
    assert _objects_of(record) == []
    assert not any(p.name.startswith(".partial-") for p in get_storage().path("clinica_demo/x").parent.iterdir())


class _FullDiskWriter(LocalWriter):
    def write(self, data: bytes) -> None:
        if self.file.tell() > 200_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(data)


class _FullDiskStorage(LocalStorage):
    def open_write(self, key):
        return _FullDiskWriter(self.path(key))


def test_full_disk_gives_a_failed_record_and_removes_the_partial_file(monkeypatch, tmp_path):
    storage = _FullDiskStorage(tmp_path)
    monkeypatch.setattr(backup_run_module, "get_storage", lambda name=None: storage)
    record = backup_run(record_id=backup_record_create(schema_name="clinica_demo", fmt="sql", compression="none").pk)
    assert record.status == BackupRecord.Status.FAILED
    assert "No space left" in record.error
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # only the tenant's (empty) folders


def test_earlier_backups_survive_a_failure():
    good = backup_run(record_id=backup_record_create(schema_name="clinica_demo").pk)
    bad = backup_run(record_id=backup_record_create(schema_name="clinica_gone").pk)
    assert bad.status == BackupRecord.Status.FAILED
    assert get_storage().stat(good.storage_key).size == good.size


def test_a_record_run_by_a_live_worker_is_left_alone():
    record = backup_record_create(schema_name="clinica_demo")
    with pgtools.connect(autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(RECORD_NAMESPACE, record.pk),))
        result = backup_run(record_id=record.pk)
    assert result.status == BackupRecord.Status.QUEUED
    assert _objects_of(record) == []


def test_a_record_left_running_by_a_dead_worker_is_run_again():
    record = backup_record_create(schema_name="clinica_demo")
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.RUNNING, attempts=1)
    record = backup_run(record_id=record.pk)
    assert record.status == BackupRecord.Status.SUCCEEDED
    assert record.attempts == 2


def test_finished_records_are_not_run_again():
    record = backup_run(record_id=backup_record_create(schema_name="clinica_demo").pk)
    again = backup_run(record_id=record.pk)
    assert again.finished_at == record.finished_at and again.attempts == 1
    assert backup_run(record_id=10**9) is None


def test_unknown_format_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="Unknown format"):
        backup_record_create(schema_name="clinica_demo", fmt="xml")
    with pytest.raises(ValueError, match="Invalid schema name"):
        backup_record_create(schema_name="Robert'); DROP TABLE--")




def test_an_object_without_a_record_at_the_key_is_kept_and_the_backup_takes_the_next_name():
    record = backup_record_create(schema_name="clinica_norte", fmt="sql")
    orphan = b"an older backup whose record was lost"
    get_storage().put_bytes(record.storage_key, orphan)
    done = backup_run(record_id=record.pk)
    assert done.status == BackupRecord.Status.SUCCEEDED, done.error
    assert done.storage_key != record.storage_key  # the next free -N of the same name (the name may have had one)
    assert done.file_name in {with_suffix(record.file_name, n) for n in range(2, 10)}
    assert get_storage().get_bytes(record.storage_key) == orphan  # never overwritten
    assert get_storage().stat(done.storage_key).size == done.size
    assert BackupRecord.objects.get(pk=record.pk).file_name == done.storage_key.rsplit("/", 1)[1]
    get_storage().delete(record.storage_key)
