"""Run one backup record: dump, compress, hash, store, confirm, record. Idempotent on the record."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

from backups.backup.artifact import artifact_writer, store_and_confirm
from backups.backup.attempts import backup_attempt_adopt, backup_attempt_take_key
from backups.catalog.faults import is_transient, write_through_fresh_connection
from backups.catalog.progress import progress_listener_now, progress_notify
from backups.catalog.records import (
    backup_record_mark_failed,
    backup_record_mark_queued,
    backup_record_mark_running,
    backup_record_mark_succeeded,
)
from backups.conf import backups_settings
from backups.core.errors import BackupError, TransientBackupError
from backups.models import BackupRecord
from backups.postgres import pgtools
from backups.postgres.dumpers import DumpInfo, dump_with_django, dump_with_pg_dump
from backups.postgres.locks import RECORD_NAMESPACE, claim_unfinished, dump_slot, tenant_lock
from backups.storage import Storage, StorageError, get_storage
from backups.storage.local import is_disk_full
from backups.storage.sink import SinkResult

logger = logging.getLogger(__name__)


class _Progress:
    """Writes progress on the record through its own connection (the dump may hold Django's in a read-only tx)."""

    def __init__(self, record_id: int) -> None:
        self.record_id = record_id
        self.conn = None
        self.listener = progress_listener_now()  # taken here: the sink may call from another thread

    def __call__(self, bytes_done: int) -> None:
        try:
            if self.conn is None:
                self.conn = pgtools.connect(autocommit=True)
            self.conn.execute("UPDATE backups_backuprecord SET bytes_done = %s WHERE id = %s",
                              (bytes_done, self.record_id))
        except Exception:  # progress is best effort; the backup goes on
            logger.debug("progress update failed", exc_info=True)
        progress_notify(self.listener, self.record_id, bytes_done)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _dump_to_storage(record: BackupRecord, storage: Storage) -> tuple[DumpInfo, SinkResult]:
    progress = _Progress(record.pk)
    try:
        with artifact_writer(record, storage, on_progress=progress,
                             progress_every=backups_settings.BACKUPS_PROGRESS_EVERY_BYTES) as artifact:
            if record.format == BackupRecord.Format.JSON:
                info = dump_with_django(record.schema_name, artifact.sink)
            else:
                info = dump_with_pg_dump(record.schema_name, record.format, artifact.sink)
    finally:
        progress.close()
    return info, artifact.result


def describe_error(exc: BaseException) -> str:
    """One sentence a user can act on."""
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The backup took longer than {backups_settings.BACKUPS_DUMP_SOFT_TIME_LIMIT} s."
    if is_disk_full(exc):
        return "No space left on the device holding the backup storage; the partial file was removed."
    if isinstance(exc, (BackupError, StorageError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Failure:
    """How a member's failure was recorded: its message, whether it goes back to `queued` for another try, and
    whether it is one of the failures a backup expects (bad input, storage, disk) rather than a bug."""

    message: str
    transient: bool
    expected: bool


def settle_failure(record: BackupRecord, exc: BaseException) -> Failure:
    """The one rule for a failed backup, single or batch member: a transient cause puts the record back to
    `queued` with its message (retried), anything else marks it `failed`. Written through a fresh connection:
    the failure may be the database's."""
    message = describe_error(exc)
    transient = is_transient(exc, record)
    if transient:
        write_through_fresh_connection(lambda: backup_record_mark_queued(record=record, error=message))
    else:
        write_through_fresh_connection(lambda: backup_record_mark_failed(record=record, error=message))
    return Failure(message, transient, isinstance(exc, (BackupError, StorageError, OSError)))


def backup_run(*, record_id: int, task_id: str = "") -> BackupRecord | None:
    """Run the record's backup unless it already finished or another live worker is running it.

    A record found `running` whose advisory lock is free was left by a dead worker: it is run again.
    The tenant's lock is held for the dump, so it never overlaps a replace restore of the tenant (whose own
    safety backup takes it again, re-entrant); while another holds it this waits up to
    BACKUPS_TENANT_LOCK_WAIT_SECONDS, then raises TenantBusy (transient: the task retries).
    Transient failures put the record back to `queued` and re-raise TransientBackupError for the caller
    to retry; anything else marks it `failed` with the error.
    """
    with claim_unfinished(BackupRecord, record_id, namespace=RECORD_NAMESPACE,
                          finished=BackupRecord.FINISHED_STATUSES) as (record, claimed):
        if not claimed:
            return record
        with (tenant_lock(record.schema_name, what=f"backup {record.pk} ({record.backup_type})",
                          wait_seconds=backups_settings.BACKUPS_TENANT_LOCK_WAIT_SECONDS),
              dump_slot(backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS,
                        wait_seconds=backups_settings.BACKUPS_DUMP_SLOT_WAIT_SECONDS) as slot):
            if slot is None:
                raise TransientBackupError(
                    f"All {backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS} dump slots stayed busy "
                    "(BACKUPS_MAX_CONCURRENT_DUMPS); will retry."
                )
            return _run_claimed(record, task_id)


def _run_claimed(record: BackupRecord, task_id: str) -> BackupRecord:
    """Run a record this worker holds the lock and a dump slot for."""
    backup_record_mark_running(record=record, task_id=task_id)
    try:
        storage = get_storage(record.storage_backend)
        if (adopted := backup_attempt_take_key(record=record, storage=storage)) is not None:
            return backup_attempt_adopt(record=record, manifest=adopted)
        info, result = _dump_to_storage(record, storage)
        manifest = store_and_confirm(record, storage, info, result)
    except BaseException as exc:
        error = settle_failure(record, exc)
        if error.transient:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise  # a stopping worker stops; the message comes back (acks_late) or the reaper resends it
            raise TransientBackupError(error.message) from exc
        if error.expected:
            return record
        raise
    return backup_record_mark_succeeded(
        record=record, size=result.size, sha256=result.sha256, plain_size=result.plain_size,
        plain_sha256=result.plain_sha256, manifest=manifest,
    )
