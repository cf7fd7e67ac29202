"""Progress: a running backup shows bytes done against an estimate from the tenant's last good backup."""

import threading
from datetime import timedelta

from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.run import backup_run
from backups.catalog.progress import progress_of
from backups.catalog.records import backup_record_create
from backups.catalog.selectors import schema_relation_bytes
from backups.models import BackupRecord
from backups.postgres.pgtools import connect


def test_a_running_backup_is_measured_against_the_last_good_one():
    tenant = get_tenant_model().objects.get(schema_name="clinica_norte")
    done = backup_run(record_id=backup_record_create(schema_name="clinica_norte", tenant=tenant).pk)
    assert done.status == BackupRecord.Status.SUCCEEDED
    assert progress_of(done).percent == 100.0 and progress_of(done).estimated_total == done.plain_size
    running = backup_record_create(schema_name="clinica_norte", tenant=tenant)
    try:
        half = done.plain_size // 2
        BackupRecord.objects.filter(pk=running.pk).update(
            status=BackupRecord.Status.RUNNING, stage="dumping", bytes_done=half,
            started_at=timezone.now() - timedelta(seconds=10))
        progress = progress_of(BackupRecord.objects.get(pk=running.pk))
        assert progress.estimated_total == done.plain_size
        assert 49 <= progress.percent <= 51
        assert 8 <= progress.eta_seconds <= 12  # as long again at the same rate
        assert "dumping" in progress.line() and "%" in progress.line()
        BackupRecord.objects.filter(pk=running.pk).update(bytes_done=done.plain_size * 3)
        assert progress_of(BackupRecord.objects.get(pk=running.pk)).percent == 99.0  # never 100 before the end
    finally:
        BackupRecord.objects.filter(pk=running.pk).delete()


def test_without_history_the_estimate_is_the_schemas_size():
    tenant = get_tenant_model().objects.get(schema_name="clinica_sonrisa")
    record = backup_record_create(schema_name="clinica_sonrisa", tenant=tenant, fmt="dump")
    try:
        BackupRecord.objects.filter(schema_name="clinica_sonrisa", format="dump").exclude(pk=record.pk) \
            .update(plain_size=None)
        progress = progress_of(record)
        assert progress.estimated_total == schema_relation_bytes("clinica_sonrisa") > 0
        assert progress.percent == 0.0 and progress.eta_seconds is None
    finally:
        record.delete()


def test_the_schema_size_estimate_does_not_wait_behind_an_exclusive_lock():
    # a migration holding a table: the estimate (taken before a worker's dump) falls back to the catalog's pages
    with connect() as other:
        other.execute("LOCK TABLE clinica_sonrisa.clinic_invoice IN ACCESS EXCLUSIVE MODE")
        done = threading.Event()
        found = []
        worker = threading.Thread(target=lambda: (found.append(_in_fresh_connection(schema_relation_bytes,
                                                                                    "clinica_sonrisa")), done.set()))
        worker.start()
        finished = done.wait(30)  # generous: blocking would mean until the lock goes
        other.rollback()
        worker.join()
    assert finished and found[0] >= 0


def test_the_estimate_leaves_the_callers_lock_timeout_alone():
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '7s'")
        assert schema_relation_bytes("clinica_sonrisa") > 0
        cur.execute("SHOW lock_timeout")
        assert cur.fetchone()[0] == "7s"


def _in_fresh_connection(fn, *args):
    from django.db import connection as conn

    try:
        return fn(*args)
    finally:
        conn.close()


def test_a_progress_listener_hears_each_step_of_a_backup(settings):
    from backups.catalog.progress import progress_listener

    settings.BACKUPS_PROGRESS_EVERY_BYTES = 64 * 1024
    heard: list[tuple[int, int]] = []
    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    record = backup_record_create(schema_name="clinica_demo", tenant=tenant)
    with progress_listener(lambda rid, done: heard.append((rid, done))):
        done = backup_run(record_id=record.pk)
    assert done.status == BackupRecord.Status.SUCCEEDED
    assert len(heard) >= 3 and {rid for rid, _ in heard} == {record.pk}
    steps = [b for _, b in heard]
    assert steps == sorted(steps) and steps[-1] <= done.plain_size


def test_the_worker_task_sends_flower_progress_events(settings):
    from backups.tasks import progress_events

    sent: list[dict] = []

    class FakeTask:
        def send_event(self, kind, **fields):
            sent.append({"type": kind, **fields})

    tenant = get_tenant_model().objects.get(schema_name="clinica_demo")
    finished = backup_run(record_id=backup_record_create(schema_name="clinica_demo", tenant=tenant).pk)
    record = backup_record_create(schema_name="clinica_demo", tenant=tenant)
    try:
        send = progress_events(FakeTask(), record.pk)
        send(record.pk, finished.plain_size // 4)
        assert sent == [{"type": "task-progress", "record_id": record.pk, "bytes_done": finished.plain_size // 4,
                         "estimated_total": finished.plain_size, "percent": 25.0}]
    finally:
        record.delete()
