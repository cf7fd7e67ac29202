"""A Redis restart while a backup runs: the same worker process finishes it and goes on consuming.

Runs its own diskless redis-server (never the shared one) and its own worker pointed at it. The running
backup is held mid-dump by a table lock pg_dump waits for, so the restart lands while the task is unacked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.tasks import run_backup
from project.celery import app
from project.processes import start_worker, stop_process
from tasks.queues import DUMP_PRIORITY
from tests.servers.redis_server import RedisServer

from .conftest import wait_for_record


@contextlib.contextmanager
def private_broker_worker(name: str, extra_env: dict[str, str] | None = None
                          ) -> Iterator[tuple[RedisServer, object, Path]]:
    """A private Redis and one worker on it; both stopped by pid on exit."""
    server = RedisServer.start()
    log = Path(settings.BASE_DIR) / "var" / f"{name}.log"
    log.unlink(missing_ok=True)
    proc = start_worker(name=name, concurrency=2, log_file=log,
                        extra_env={"REDIS_URL": server.url, **(extra_env or {})})
    try:
        wait_for(lambda: proc.poll() is not None or " ready." in log.read_text(), "the worker to start")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield server, proc, log
    finally:
        stop_process(proc)
        server.stop()


def send_backup(url: str, record: BackupRecord) -> None:
    """Publish run_backup for the record to the private broker."""
    with app.connection_for_write(url) as conn:
        run_backup.apply_async((record.pk,), connection=conn, queue=DUMP_PRIORITY)


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def pg_dump_waiting_on_lock() -> bool:
    with pgtools.connect(autocommit=True) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND query ILIKE 'LOCK TABLE%%'").fetchall())


@pytest.mark.timeout(240)
def test_redis_restart_under_a_running_backup_keeps_the_worker_consuming():
    with private_broker_worker("broker-restart") as (server, proc, log):
        pid = proc.pid
        locker = pgtools.connect()
        locker.execute("LOCK TABLE clinica_demo.clinic_invoice IN ACCESS EXCLUSIVE MODE")
        try:
            held = backup_record_create(schema_name="clinica_demo", fmt="sql")
            send_backup(server.url, held)
            wait_for(pg_dump_waiting_on_lock, "pg_dump to wait on the table lock")
            assert BackupRecord.objects.get(pk=held.pk).status == BackupRecord.Status.RUNNING
            server.restart(down_seconds=2.0)  # diskless: the queue and the unacked index are gone
            wait_for(lambda: proc.poll() is not None or log.read_text().count("Connected to") >= 2,
                     "the worker to reconnect", timeout=60)
            assert proc.poll() is None, f"the worker exited: {log.read_text()[-3000:]}"
        finally:
            locker.rollback()
            locker.close()
        assert wait_for_record(held.pk, timeout=120).status == BackupRecord.Status.SUCCEEDED
        after = backup_record_create(schema_name="clinica_norte", fmt="sql")
        send_backup(server.url, after)
        assert wait_for_record(after.pk, timeout=120).status == BackupRecord.Status.SUCCEEDED
        assert proc.poll() is None and proc.pid == pid, log.read_text()[-3000:]
        assert "Unrecoverable error" not in log.read_text()
