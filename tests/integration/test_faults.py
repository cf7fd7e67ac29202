"""Faults between the steps of a backup: crashes after the link, dropped connections, transient storage,
time limits, interrupted deletions, dead writers' partial files and lost broker messages."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from backups.backup import run as backup_run_module
from backups.backup.run import backup_run
from backups.catalog.faults import retry_delays
from backups.catalog.finalize import backup_record_delete
from backups.catalog.manifest import manifest_bytes, manifest_key, sign_manifest
from backups.catalog.records import backup_record_create
from backups.core.errors import TransientBackupError
from backups.core.naming import with_suffix
from backups.housekeeping.broker_scan import record_ids_in_broker
from backups.housekeeping.reaper import reap_stuck_backups
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupEvent, BackupRecord
from backups.postgres import pgtools
from backups.storage import get_storage
from backups.storage.local import PARTIAL_PREFIX, LocalStorage, LocalWriter
from backups.tasks import fan_out_backups, run_backup
from project.celery import app
from tasks.queues import DUMP


@pytest.fixture(autouse=True)
def forget_what_the_test_made():
    """Delete the records (and objects) a test made: its failures must not stop other tests' retention."""
    last = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    yield
    storage = get_storage()
    for record in BackupRecord.objects.filter(pk__gt=last):
        if record.status == BackupRecord.Status.SUCCEEDED:
            storage.delete(record.storage_key)
            storage.delete(manifest_key(record.storage_key))
        record.delete()


def _stored_under(record: BackupRecord) -> list[str]:
    """Every object (not manifest) stored under the record's name, `-N` variants included."""
    stem = record.storage_key.rsplit(".", 2)[0]
    return sorted(o.key for o in get_storage().list(record.schema_name + "/")
                  if o.key.startswith(stem) and not o.key.endswith(".manifest.json"))


def _fail_events(record: BackupRecord) -> int:
    return BackupEvent.objects.filter(record_id=record.pk, action=BackupEvent.Action.FAIL).count()


def _as_if_killed_after_link(record: BackupRecord, *, keep_manifest: bool) -> None:
    """The database as a worker killed -9 after linking the object (and maybe its manifest) leaves it."""
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.RUNNING, stage="dumping",
                                                     size=None, sha256="", finished_at=None, manifest={})
    if not keep_manifest:
        get_storage().delete(manifest_key(record.storage_key))


# --- 2. one object per record whatever crashes -------------------------------------------------------------

def test_rerun_after_a_kill_between_link_and_manifest_replaces_its_own_object():
    record = backup_run(record_id=backup_record_create(schema_name="clinica_norte", fmt="sql").pk)
    _as_if_killed_after_link(record, keep_manifest=False)
    again = backup_run(record_id=record.pk)
    assert again.status == BackupRecord.Status.SUCCEEDED and again.attempts == 2
    assert again.storage_key == record.storage_key
    assert _stored_under(record) == [record.storage_key]  # no `-2` copy beside it
    assert get_storage().stat(record.storage_key).size == again.size
    assert get_storage().stat(manifest_key(record.storage_key)) is not None


def test_rerun_after_a_kill_before_the_success_was_written_adopts_the_stored_object():
    record = backup_run(record_id=backup_record_create(schema_name="clinica_norte", fmt="sql").pk)
    stored_at = get_storage().stat(record.storage_key).last_modified
    _as_if_killed_after_link(record, keep_manifest=True)
    again = backup_run(record_id=record.pk)
    assert again.status == BackupRecord.Status.SUCCEEDED
    assert (again.size, again.sha256) == (record.size, record.sha256)
    assert get_storage().stat(record.storage_key).last_modified == stored_at  # not dumped again
    assert _stored_under(record) == [record.storage_key]


def test_reconcile_never_makes_a_second_record_for_a_record_or_slot_that_has_one():
    """The old rerun moved the record to `-2` and left its first, manifested object at the key."""
    slot = timezone.now().replace(microsecond=0) - timedelta(days=400)
    record = backup_run(record_id=backup_record_create(schema_name="clinica_norte", backup_type="automatic",
                                                       slot=slot).pk)
    storage = get_storage()
    first_key = record.storage_key
    moved = with_suffix(record.file_name, 2)
    moved_key = first_key.rsplit("/", 1)[0] + "/" + moved
    with storage.open_read(first_key) as src:
        storage.put_bytes(moved_key, src.read())
    BackupRecord.objects.filter(pk=record.pk).update(file_name=moved, storage_key=moved_key)
    before = BackupRecord.objects.count()
    result = storage_reconcile(schemas=["clinica_norte"])
    assert first_key in result.duplicates and first_key not in result.imported
    manifest = json.loads(storage.get_bytes(manifest_key(first_key)))
    manifest["record_id"] = 10**9  # a record that is gone, of the same slot
    storage.delete(manifest_key(first_key))
    storage.put_bytes(manifest_key(first_key), manifest_bytes(sign_manifest(manifest)))
    result = storage_reconcile(schemas=["clinica_norte"])
    assert first_key in result.duplicates
    assert BackupRecord.objects.count() == before
    for key in (first_key, manifest_key(first_key)):
        storage.delete(key)


# --- 3. dead writers' partial files ------------------------------------------------------------------------

def test_reaper_removes_partial_files_of_dead_writers_after_the_age_bound(settings):
    storage = get_storage()
    folder = storage.path("clinica_demo/x").parent
    folder.mkdir(parents=True, exist_ok=True)
    dead, live = folder / f"{PARTIAL_PREFIX}dead-x.sql.zst", folder / f"{PARTIAL_PREFIX}live-x.sql.zst"
    dead.write_bytes(b"half a dump")
    live.write_bytes(b"a dump being written")
    old = time.time() - settings.BACKUPS_DUMP_TIME_LIMIT - settings.BACKUPS_RUNNING_GRACE_SECONDS - 60
    os.utime(dead, (old, old))
    result = reap_stuck_backups()
    assert result.aborted_uploads >= 1
    assert not dead.exists() and live.exists()
    live.unlink()


# --- 4. a dropped database connection mid-backup ------------------------------------------------------------

def test_a_dropped_database_connection_mid_backup_is_recorded_through_a_fresh_connection():
    """pg_dump waits on a lock; then its backend and Django's are both terminated, as a server restart does."""
    locker = pgtools.connect()
    locker.execute("LOCK TABLE clinica_sonrisa.clinic_invoice IN ACCESS EXCLUSIVE MODE")
    killed = threading.Event()

    def drop_connections() -> None:
        with pgtools.connect(autocommit=True) as admin:
            for _ in range(400):
                rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND "
                                     "wait_event_type = 'Lock' AND query ILIKE 'LOCK TABLE%%'").fetchall()
                if rows:
                    for pid in (rows[0][0], django_pid):
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.set()
                    break
                time.sleep(0.05)
        locker.rollback()
        locker.close()

    record = backup_record_create(schema_name="clinica_sonrisa", fmt="sql", backup_type="automatic")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        django_pid = cursor.fetchone()[0]
    thread = threading.Thread(target=drop_connections)
    thread.start()
    with pytest.raises(TransientBackupError, match="terminat"):
        backup_run(record_id=record.pk)
    thread.join()
    assert killed.is_set()
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.QUEUED and record.stage == "retrying"
    assert "terminat" in record.error
    assert _stored_under(record) == []


def test_reaper_says_what_left_a_record_running(settings, monkeypatch):
    from backups.housekeeping import reaper

    sent = []  # not to the session's worker: it would take the record and run it before the check below
    monkeypatch.setattr(reaper, "backups_enqueue", sent.extend)
    record = backup_record_create(schema_name="clinica_sonrisa")
    long_ago = timezone.now() - timedelta(seconds=settings.BACKUPS_ORPHAN_GRACE_SECONDS + 60)
    BackupRecord.objects.filter(pk=record.pk).update(status="running", started_at=long_ago, attempts=1,
                                                     stage=BackupRecord.Stage.DUMPING, enqueued_at=long_ago)
    result = reap_stuck_backups(broker_url=None)
    assert record.pk in result.requeued and record.pk in [r.pk for r in sent]
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.QUEUED
    assert "lost its database connection" in record.error and "stage dumping" in record.error


# --- 5. transient storage failures of automatic backups -----------------------------------------------------

class _FlakyWriter(LocalWriter):
    failures: list[int]

    def write(self, data: bytes) -> None:
        if self.failures and self.failures[0] > 0:
            self.failures[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(data)


def _flaky_storage(root, failures: int) -> LocalStorage:
    counter = [failures]

    class Flaky(LocalStorage):
        def open_write(self, key):
            writer = _FlakyWriter(self.path(key))
            writer.failures = counter
            return writer

    return Flaky(root)


def test_a_full_disk_under_an_automatic_backup_is_retried_with_backoff_until_it_succeeds(monkeypatch, tmp_path,
                                                                                            settings):
    settings.BACKUPS_TASK_RETRY_DELAY = 1
    storage = _flaky_storage(tmp_path, failures=2)
    monkeypatch.setattr(backup_run_module, "get_storage", lambda name=None: storage)
    record = backup_record_create(schema_name="clinica_demo", fmt="sql", backup_type="automatic")
    run_backup.apply(args=[record.pk])
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    assert record.attempts == 3 and _fail_events(record) == 0
    assert storage.stat(record.storage_key).size == record.size


def test_a_lasting_storage_failure_gives_up_after_the_window_with_its_message(monkeypatch, tmp_path, settings):
    settings.BACKUPS_TASK_RETRY_DELAY = 1
    settings.BACKUPS_TASK_RETRY_MAX_DELAY = 2
    # waits of 1 s and 2 s: three tries; the window also counts the tries' own time (eager here, so the waits are
    # not slept): 1 s of slack keeps a loaded machine's slower tries inside it
    settings.BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS = 4
    storage = _flaky_storage(tmp_path, failures=100)
    monkeypatch.setattr(backup_run_module, "get_storage", lambda name=None: storage)
    record = backup_record_create(schema_name="clinica_demo", fmt="sql", backup_type="automatic")
    assert retry_delays(record) == [1, 2]
    run_backup.apply(args=[record.pk])
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.FAILED
    assert record.error.startswith("Gave up after 3 tries over 3 s: No space left")
    assert record.attempts == 3 and _fail_events(record) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_manual_backups_fail_at_once_on_a_full_disk_and_retry_a_few_times_otherwise(monkeypatch, tmp_path,
                                                                                     settings):
    storage = _flaky_storage(tmp_path, failures=1)
    monkeypatch.setattr(backup_run_module, "get_storage", lambda name=None: storage)
    record = backup_record_create(schema_name="clinica_demo", fmt="sql")
    assert len(retry_delays(record)) == settings.BACKUPS_TASK_MAX_RETRIES
    run_backup.apply(args=[record.pk])
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.FAILED and "No space left" in record.error
    assert record.attempts == 1


def test_default_retry_window_is_bounded_and_below_the_visibility_timeout(settings):
    record = BackupRecord(backup_type="automatic")
    delays = retry_delays(record)
    assert sum(delays) <= settings.BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS
    assert max(delays) <= settings.BACKUPS_TASK_RETRY_MAX_DELAY
    assert delays == sorted(delays) and len(delays) >= 3


# --- 6. a soft time limit writes one failure -----------------------------------------------------------------

def test_a_soft_time_limit_writes_exactly_one_fail_event(monkeypatch):
    def too_slow(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(backup_run_module, "dump_with_pg_dump", too_slow)
    record = backup_record_create(schema_name="clinica_demo", fmt="sql")
    assert run_backup.apply(args=[record.pk]).get() == "failed"
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.FAILED
    assert record.error.startswith("The backup took longer than")
    assert _fail_events(record) == 1


# --- 7. retention deletes in a crash-safe order --------------------------------------------------------------

class _Crash(BaseException):
    """A kill -9 in the middle of a deletion."""


@pytest.mark.parametrize("crash_at", ["object", "record"])
def test_a_crash_mid_deletion_leaves_a_marked_record_that_the_reaper_finishes(monkeypatch, crash_at):
    record = backup_run(record_id=backup_record_create(schema_name="clinica_norte", fmt="sql").pk)
    storage = get_storage()
    if crash_at == "object":
        monkeypatch.setattr(type(storage), "delete", lambda self, key: (_ for _ in ()).throw(_Crash()))
    else:
        monkeypatch.setattr(BackupRecord, "delete", lambda self, *a, **k: (_ for _ in ()).throw(_Crash()))
    events = BackupEvent.objects.filter(schema_name="clinica_norte", action=BackupEvent.Action.RETENTION,
                                        details__storage_key=record.storage_key)
    before = events.count()  # an earlier test's record may have had the same name
    with pytest.raises(_Crash):
        backup_record_delete(record=record, actor={"retention": True}, action=BackupEvent.Action.RETENTION)
    monkeypatch.undo()
    left = BackupRecord.objects.get(pk=record.pk)
    assert left.stage == BackupRecord.Stage.DELETING  # never a plain succeeded record without its object
    assert (storage.stat(record.storage_key) is None) == (crash_at == "record")
    result = reap_stuck_backups()
    assert result.finished_deletions >= 1
    assert not BackupRecord.objects.filter(pk=record.pk).exists()
    assert storage.stat(record.storage_key) is None and storage.stat(manifest_key(record.storage_key)) is None
    assert events.count() == before + 1


# --- 8. lost broker messages ----------------------------------------------------------------------------------

def test_broker_scan_finds_records_in_queues_and_batches(private_broker):
    with app.connection_for_write(private_broker.url) as conn:
        run_backup.apply_async((101,), connection=conn, queue=DUMP)
        run_backup.apply_async((102,), connection=conn, queue=DUMP, priority=5)
        fan_out_backups.apply_async(kwargs={"record_ids": [103, 104]}, connection=conn)
    assert record_ids_in_broker(("backups.dispatch", "backups.dump", "backups.dump.priority"),
                                url=private_broker.url) == {101, 102, 103, 104}


def test_a_message_held_by_a_dead_worker_counts_as_lost(private_broker):
    """A killed worker's prefetched message sits in the unacked index until the visibility timeout (hours)."""
    import redis as redis_client

    with app.connection_for_write(private_broker.url) as conn:
        run_backup.apply_async((105,), connection=conn, queue=DUMP)
    client = redis_client.Redis.from_url(private_broker.url)
    queue = next(k for k in client.keys("*backups.dump") if client.type(k) == b"list")
    prefix = queue.decode()[:-len("backups.dump")]
    raw = client.rpop(queue)  # taken by a worker that then died: only the unacked index holds it
    client.hset(prefix + "unacked", "tag-1", json.dumps([json.loads(raw), "backups.dump", "backups.dump"]))
    assert record_ids_in_broker(("backups.dump",), url=private_broker.url) == set()


def test_lost_messages_are_resent_within_one_reaper_pass_and_waiting_ones_never(private_broker, settings,
                                                                                 monkeypatch):
    from backups.backup import enqueue as enqueue_module

    sent: list[int] = []
    monkeypatch.setattr(enqueue_module, "publish_messages", lambda chains: sent.extend(c.args[0]
                                                                                     for c in chains))
    ago = timezone.now() - timedelta(seconds=settings.BACKUPS_LOST_MESSAGE_SECONDS + 60)
    lost = backup_record_create(schema_name="clinica_sonrisa")
    waiting = backup_record_create(schema_name="clinica_sonrisa")
    BackupRecord.objects.filter(pk__in=[lost.pk, waiting.pk]).update(enqueued_at=ago)
    with app.connection_for_write(private_broker.url) as conn:
        run_backup.apply_async((waiting.pk,), connection=conn, queue=DUMP)
    for _ in range(3):  # a long queue stays as long: however many passes, the waiting record is not resent
        result = reap_stuck_backups(broker_url=private_broker.url)
        assert waiting.pk not in result.requeued
    assert sent.count(lost.pk) == 1 and waiting.pk not in sent
    lost.refresh_from_db()
    assert lost.enqueued_at > ago and lost.status == BackupRecord.Status.QUEUED
