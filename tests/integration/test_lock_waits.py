"""Table locks held by other sessions (a migration, a stuck transaction): every wait of a backup is bounded by
BACKUPS_LOCK_WAIT_SECONDS, a locked tenant retries alone naming the lock, the rest of its batch goes on, the soft
time limit ends a dump at once, and the reaper knows batch messages.

Each test holds `ACCESS EXCLUSIVE` on one demo tenant's table from its own connection. A watchdog lets go of the
lock after WATCHDOG seconds, so code that waits without bound ends the test late (and fails its time check)
instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.batch import run as batch_backup
from backups.backup.batch.run import batch_backup_run
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import TransientBackupError
from backups.housekeeping import broker_scan as broker_scan_module
from backups.housekeeping.broker_scan import record_ids_in_broker
from backups.housekeeping.reaper import reap_stuck_backups
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.tasks import run_backup_batch
from project.celery import app
from tasks.queues import DUMP

from .conftest import DEMO_SCHEMAS

LOCKED_SCHEMA = "clinica_norte"
LOCKED_TABLE = f"{LOCKED_SCHEMA}.clinic_patient"
WATCHDOG = 15.0
pytestmark = pytest.mark.usefixtures("forget_new_backups")


@contextlib.contextmanager
def table_locked(table: str = LOCKED_TABLE, *, watchdog: float = WATCHDOG) -> Iterator[threading.Event]:
    """Hold ACCESS EXCLUSIVE on `table` until the block ends or `watchdog` seconds pass (set on release)."""
    holder = pgtools.connect(application_name="lock-holder-test")
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    released = threading.Event()
    guard = threading.Lock()

    def release() -> None:
        with guard:
            if not released.is_set():
                released.set()
                holder.close()  # the transaction ends with the connection

    timer = threading.Timer(watchdog, release)
    timer.daemon = True
    timer.start()
    try:
        yield released
    finally:
        timer.cancel()
        release()


@pytest.fixture
def short_lock_waits(settings, tmp_path):
    settings.BACKUPS_LOCK_WAIT_SECONDS = 1
    settings.BACKUPS_SPOOL_DIR = str(tmp_path)
    return settings


def _records(schemas=DEMO_SCHEMAS, fmt: str = "sql") -> list[BackupRecord]:
    Tenant = get_tenant_model()
    return [backup_record_create(schema_name=s, tenant=Tenant.objects.get(schema_name=s), fmt=fmt) for s in schemas]


def _assert_names_the_lock(error: str) -> None:
    assert LOCKED_TABLE in error, error
    assert "pid" in error and "lock-holder-test" in error, error


# ----------------------------------------------------------------------------- batches


def test_a_locked_member_is_retried_alone_and_the_rest_of_its_batch_goes_on(short_lock_waits):
    records = _records()
    locked = next(r for r in records if r.schema_name == LOCKED_SCHEMA)
    with table_locked() as released:
        started = time.monotonic()
        result = batch_backup_run(record_ids=[r.pk for r in records])
        took = time.monotonic() - started
        assert not released.is_set(), "the batch waited for the lock until the watchdog let go of it"
    assert took < 10, took
    assert result.retry == [locked.pk]
    assert sorted(result.succeeded) == sorted(r.pk for r in records if r.pk != locked.pk)
    assert result.dumped == len(records) - 1
    locked.refresh_from_db()
    assert locked.status == BackupRecord.Status.QUEUED
    _assert_names_the_lock(locked.error)


def test_a_lock_taken_after_the_batch_is_measured_cuts_its_pg_dump_and_only_the_locked_member_retries(
        short_lock_waits, monkeypatch):
    records = _records()
    locked = next(r for r in records if r.schema_name == LOCKED_SCHEMA)
    real_sizes = batch_backup._schema_sizes
    holder: list[contextlib.ExitStack] = []

    def sizes_then_lock(conn, schemas):
        found = real_sizes(conn, schemas)
        stack = contextlib.ExitStack()
        holder.append(stack)
        stack.enter_context(table_locked())
        return found

    monkeypatch.setattr(batch_backup, "_schema_sizes", sizes_then_lock)
    started = time.monotonic()
    try:
        result = batch_backup_run(record_ids=[r.pk for r in records])
        took = time.monotonic() - started
    finally:
        for stack in holder:
            stack.close()
    assert took < 12, took
    assert result.retry == [locked.pk]
    assert sorted(result.succeeded) == sorted(r.pk for r in records if r.pk != locked.pk)
    locked.refresh_from_db()
    assert locked.status == BackupRecord.Status.QUEUED
    _assert_names_the_lock(locked.error)


# ----------------------------------------------------------------------------- one tenant


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_a_single_backup_gives_up_on_a_lock_naming_it_and_retries(short_lock_waits, fmt):
    record = _records([LOCKED_SCHEMA], fmt=fmt)[0]
    with table_locked() as released:
        started = time.monotonic()
        with pytest.raises(TransientBackupError) as raised:
            backup_run(record_id=record.pk)
        took = time.monotonic() - started
        assert not released.is_set(), "the backup waited for the lock until the watchdog let go of it"
    assert took < 8, took
    _assert_names_the_lock(str(raised.value))
    assert "BACKUPS_LOCK_WAIT_SECONDS" in str(raised.value)
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.QUEUED  # the task retries it with backoff
    _assert_names_the_lock(record.error)


@contextlib.contextmanager
def soft_time_limit_in(seconds: float) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded in the main thread after `seconds`, as Celery's soft limit does (a signal)."""
    def handler(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


def test_the_soft_time_limit_ends_a_dump_at_once_and_says_so(settings):
    # the lock wait is longer than the test: only the soft limit can end this dump (pg_dump and the row count
    # both wait on the locked table)
    settings.BACKUPS_LOCK_WAIT_SECONDS = 60
    settings.BACKUPS_DUMP_SOFT_TIME_LIMIT = 1
    record = _records([LOCKED_SCHEMA])[0]
    with table_locked() as released:
        started = time.monotonic()
        with soft_time_limit_in(1.5), pytest.raises(SoftTimeLimitExceeded):
            backup_run(record_id=record.pk)
        took = time.monotonic() - started
        assert not released.is_set(), "the dump's cleanup waited for the lock until the watchdog let go of it"
    assert took < 6, took
    record.refresh_from_db()
    assert record.status == BackupRecord.Status.FAILED
    assert "took longer than 1 s" in record.error
    with pgtools.connect(autocommit=True) as conn:  # nothing of the dump is left waiting on the lock
        left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchone()[0]
    assert left == 0


# ----------------------------------------------------------------------------- the reaper


def test_records_of_a_batch_message_waiting_in_a_queue_count_as_present(private_broker):
    with app.connection_for_write(private_broker.url) as conn:
        run_backup_batch.apply_async(kwargs={"record_ids": [301, 302]}, connection=conn, queue=DUMP)
        run_backup_batch.apply_async(([303],), connection=conn, queue=DUMP, priority=5)
    assert record_ids_in_broker(("backups.dispatch", "backups.dump", "backups.dump.priority"),
                                url=private_broker.url) == {301, 302, 303}


def test_the_reaper_never_resends_the_members_of_a_batch_waiting_in_a_queue(private_broker, settings, monkeypatch):
    from backups.backup import enqueue as enqueue_module

    sent: list = []
    monkeypatch.setattr(enqueue_module, "publish_messages", lambda chains: sent.extend(chains))
    monkeypatch.setattr(enqueue_module, "publish_batches", lambda records: sent.extend(records))
    ago = timezone.now() - timedelta(seconds=settings.BACKUPS_LOST_MESSAGE_SECONDS + 60)
    waiting = _records(DEMO_SCHEMAS[:2])
    BackupRecord.objects.filter(pk__in=[r.pk for r in waiting]).update(enqueued_at=ago)
    with app.connection_for_write(private_broker.url) as conn:
        run_backup_batch.apply_async(kwargs={"record_ids": [r.pk for r in waiting]}, connection=conn, queue=DUMP)
    for _ in range(3):
        result = reap_stuck_backups(broker_url=private_broker.url)
        assert not set(result.requeued) & {r.pk for r in waiting}
    assert sent == []


def test_records_a_live_worker_holds_count_as_present_single_and_batched(monkeypatch):
    """What `inspect` says a live worker holds (reserved, scheduled for a retry, running): its records stay."""
    class Inspect:
        def reserved(self):
            return {"w1": [{"name": "tasks.backups.run_backup_batch", "args": [],
                            "kwargs": {"record_ids": [401, 402]}}]}

        def scheduled(self):
            return {"w1": [{"eta": "x", "request": {"name": "tasks.backups.run_backup", "args": [403], "kwargs": {}}}]}

        def active(self):
            return {"w2": [{"name": "tasks.backups.run_backup_batch", "args": [[404]], "kwargs": {}},
                           {"name": "tasks.backups.fan_out_backups", "args": [], "kwargs": {"record_ids": [405]}},
                           {"name": "tasks.backups.record_backup", "args": [406], "kwargs": {}}]}

    monkeypatch.setattr(app.control, "inspect", lambda **kwargs: Inspect())
    assert broker_scan_module.record_ids_held_by_live_workers() == {401, 402, 403, 404}
