"""One guard at the database: a backup and a replace restore of one tenant never run at once, whoever starts them.

Each test makes the overlap real: a backup or a replace is held mid-way in another thread (its storage
waits on an event, a test double of the storage collaborator only), or the tenant's lock is held from the
test, and the other entry point (service, management command, the admin's worker path) is started meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db import connections
from django_tenants.utils import get_tenant_model

from backups.admin.operator import operator_backups_create
from backups.backup import run as backup_run_module
from backups.backup.run import backup_run
from backups.catalog import sources as sources_module
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.postgres.locks import TENANT_NAMESPACE, TenantBusy, lock_key, tenant_lock
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage

from .conftest import wait_for_record

SCHEMA = "clinica_norte"
WAIT = 30  # seconds any event may take before the test gives up (never reached when things work)


class _Gate:
    """Wraps a writer or reader: its first write/read blocks until released (the run is then mid-way)."""

    def __init__(self, inner, method: str, entered: threading.Event, release: threading.Event) -> None:
        self._inner, self._method, self._entered, self._release = inner, method, entered, release

    def __getattr__(self, name: str):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def gated(*args, **kwargs):
            self._entered.set()
            assert self._release.wait(WAIT), "the test never released the gate"
            return attr(*args, **kwargs)
        return gated

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        close = getattr(self._inner, "close", None)
        if close:
            close()


class _GatedStorage:
    """The real storage, except that the first object opened for `mode` ('write' or 'read') is gated."""

    def __init__(self, mode: str) -> None:
        self.inner, self.mode = get_storage(), mode
        self.entered, self.release = threading.Event(), threading.Event()
        self.used = False

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _maybe_gate(self, obj, method: str):
        if self.used:
            return obj
        self.used = True
        return _Gate(obj, method, self.entered, self.release)

    def open_write(self, key: str):
        writer = self.inner.open_write(key)
        return self._maybe_gate(writer, "write") if self.mode == "write" else writer

    def open_read(self, key: str, offset: int = 0):
        reader = self.inner.open_read(key, offset)
        return self._maybe_gate(reader, "read") if self.mode == "read" else reader


class _InThread:
    """Run fn in a thread; keep its result or exception; close its Django connections."""

    def __init__(self, fn) -> None:
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.error = exc
        finally:
            connections.close_all()

    def join(self):
        self.thread.join(WAIT * 2)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.result


@contextlib.contextmanager
def held_by_another_thread(schema: str, what: str) -> Iterator[None]:
    """The tenant's lock, held from a thread of the test as a running job would hold it."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with tenant_lock(schema, what=what):
            taken.set()
            release.wait(WAIT)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    assert taken.wait(WAIT)
    try:
        yield
    finally:
        release.set()
        t.join(WAIT)


def _succeeded_backup(schema: str = SCHEMA) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=schema).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    return record


def _safety_backups(schema: str = SCHEMA) -> int:
    return BackupRecord.objects.filter(schema_name=schema, backup_type=BackupRecord.Type.PRE_RESTORE).count()


# --- service path ------------------------------------------------------------------------------------------

def test_a_replace_restore_refuses_while_a_backup_of_the_tenant_is_dumping(monkeypatch):
    good = _succeeded_backup()
    storage = _GatedStorage("write")
    monkeypatch.setattr(backup_run_module, "get_storage", lambda name=None: storage)
    running = backup_record_create(schema_name=SCHEMA, backup_type=BackupRecord.Type.MANUAL)
    dumping = _InThread(lambda: backup_run(record_id=running.pk))
    try:
        assert storage.entered.wait(WAIT)  # pg_dump's first bytes are on their way: the backup is mid-dump
        safety_before = _safety_backups()
        with pytest.raises(TenantBusy) as refused:
            restore_replace(schema=SCHEMA, record=good)
        assert str(refused.value) == (f"Replace restore from backup {good.pk} cannot start: backup {running.pk} "
                                      f"(manual) is running on {SCHEMA}. Try again once it finishes.")
        assert _safety_backups() == safety_before  # refused before anything was done
    finally:
        storage.release.set()
    assert dumping.join().status == BackupRecord.Status.SUCCEEDED
    assert restore_replace(schema=SCHEMA, record=good, safety_backup=False).ok  # free again afterwards


def test_a_backup_waits_for_a_replace_restore_then_fails_transiently(monkeypatch, settings):
    settings.BACKUPS_TENANT_LOCK_WAIT_SECONDS = 0.6
    good = _succeeded_backup()
    storage = _GatedStorage("read")
    monkeypatch.setattr(sources_module, "get_storage", lambda name=None: storage)  # where restores open backups
    replacing = _InThread(lambda: restore_replace(schema=SCHEMA, record=good))  # its safety backup runs inside
    try:
        assert storage.entered.wait(WAIT)  # the safety backup is done, the backup is being read into psql
        waiting = backup_record_create(schema_name=SCHEMA)
        started = time.monotonic()
        with pytest.raises(TenantBusy) as busy:
            backup_run(record_id=waiting.pk)
        assert time.monotonic() - started >= 0.6
        assert str(busy.value) == (f"Backup {waiting.pk} (manual) cannot start: replace restore from backup "
                                   f"{good.pk} is running on {SCHEMA} (waited 0.6 s for it to finish). "
                                   "Try again once it finishes.")
        assert BackupRecord.objects.get(pk=waiting.pk).status == BackupRecord.Status.QUEUED  # for the retry
    finally:
        storage.release.set()
    report = replacing.join()
    assert report.ok and report.safety_record_id  # the safety backup took the lock again (re-entrant)
    assert BackupRecord.objects.get(pk=report.safety_record_id).status == BackupRecord.Status.SUCCEEDED
    assert backup_run(record_id=waiting.pk).status == BackupRecord.Status.SUCCEEDED  # the retry runs


def test_two_replace_restores_of_one_tenant_exclude_each_other(monkeypatch):
    good = _succeeded_backup()
    storage = _GatedStorage("read")
    monkeypatch.setattr(sources_module, "get_storage", lambda name=None: storage)  # where restores open backups
    first = _InThread(lambda: restore_replace(schema=SCHEMA, record=good, safety_backup=False))
    try:
        assert storage.entered.wait(WAIT)
        with pytest.raises(TenantBusy, match=f"replace restore from backup {good.pk} is running on {SCHEMA}"):
            restore_replace(schema=SCHEMA, record=good, safety_backup=False)
    finally:
        storage.release.set()
    assert first.join().ok


def test_a_verify_drill_does_not_need_the_tenant_lock():
    good = _succeeded_backup()
    with held_by_another_thread(SCHEMA, "replace restore from backup 1"):
        report = restore_verify(schema=SCHEMA, record=good)
    assert report.ok, report.message


def test_other_tenants_are_not_held_up():
    with held_by_another_thread(SCHEMA, "replace restore from backup 1"):
        record = backup_run(record_id=backup_record_create(schema_name="clinica_sonrisa").pk)
    assert record.status == BackupRecord.Status.SUCCEEDED


# --- management commands -----------------------------------------------------------------------------------

def test_restore_tenant_refuses_while_a_backup_holds_the_tenant():
    good = _succeeded_backup()
    with held_by_another_thread(SCHEMA, "backup 4242 (automatic)"), pytest.raises(CommandError) as refused:
        call_command("restore_tenant", SCHEMA, str(good.pk), "--noinput")
    assert str(refused.value) == (
        f"Restore of backup {good.pk} into {SCHEMA} failed, nothing was changed: Replace restore from backup "
        f"{good.pk} cannot start: backup 4242 (automatic) is running on {SCHEMA}. Try again once it finishes.")


def test_restore_tenant_refuses_a_holder_it_cannot_name_too():
    good = _succeeded_backup()
    with pgtools.connect(autocommit=True) as other:  # e.g. an older worker or an operator's session
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(TENANT_NAMESPACE, SCHEMA),))
        with pytest.raises(CommandError, match=f"another backup or restore of this tenant is running on {SCHEMA}"):
            call_command("restore_tenant", SCHEMA, str(good.pk), "--noinput")


def test_backup_tenant_waits_then_fails_with_the_reason_and_leaves_no_queued_record(settings):
    settings.BACKUPS_TENANT_LOCK_WAIT_SECONDS = 0.5
    before = set(BackupRecord.objects.filter(schema_name=SCHEMA).values_list("pk", flat=True))
    with held_by_another_thread(SCHEMA, "replace restore from backup 77"), pytest.raises(CommandError) as failed:
        call_command("backup_tenant", SCHEMA)
    assert "cannot start: replace restore from backup 77 is running on clinica_norte (waited 0.5 s" in str(
        failed.value)
    [made] = BackupRecord.objects.filter(schema_name=SCHEMA).exclude(pk__in=before)
    assert made.status == BackupRecord.Status.FAILED and "replace restore from backup 77" in made.error


# --- the admin's "back up now", through the real worker ------------------------------------------------------

def _lock_waiter(label: str) -> bool:
    with pgtools.connect(autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                            (f"tenant-backups lock: {label}",)).fetchone() is not None


@pytest.mark.worker
def test_back_up_now_waits_on_the_worker_until_the_replace_is_done(celery_worker):
    tenant = get_tenant_model().objects.get(schema_name=SCHEMA)
    with held_by_another_thread(SCHEMA, "replace restore from backup 5"):
        [record], busy = operator_backups_create(tenants=[tenant], actor={"admin": "test"})
        assert busy == []
        deadline = time.monotonic() + WAIT
        while not _lock_waiter(f"backup {record.pk} (manual)"):  # the worker reached the tenant's lock
            assert time.monotonic() < deadline, "the worker never asked for the tenant's lock"
            time.sleep(0.1)
        time.sleep(1.0)
        assert BackupRecord.objects.get(pk=record.pk).status == BackupRecord.Status.QUEUED  # waiting, not dumping
    assert wait_for_record(record.pk).status == BackupRecord.Status.SUCCEEDED
