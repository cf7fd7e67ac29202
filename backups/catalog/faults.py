"""Which failures are worth another try, how long to keep trying, and writing state after the database dropped us.

A backup that fails for a cause that goes away by itself (the database restarting, storage answering 5xx,
a full or read-only disk that ops fix) is tried again with backoff; the window is bounded so the record
ends `failed` with its message well before the next slot, and the overdue check and alerts see it.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.utils import timezone

from backups.conf import backups_settings
from backups.core.errors import DumpFailed, TransientBackupError
from backups.models import BackupRecord
from backups.storage import StorageTransientError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# pg_dump's messages when its server went away (restart, failover, terminated backend), not a bad dump
_DB_GONE = (
    "server closed the connection unexpectedly", "terminating connection due to administrator command",
    "the database system is shutting down", "the database system is starting up",
    "the database system is in recovery mode", "could not receive data from server", "no connection to the server",
    "SSL SYSCALL error", "Connection refused",
)
# storage an operator fixes without touching the backup: a full or read-only volume, a quota
_STORAGE_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_transient(exc: BaseException, record: BackupRecord) -> bool:
    """Whether `exc` is worth another try of this record (never bad input or a wrong setting)."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return True  # the worker is being stopped under the backup: it is not the backup's fault
    if isinstance(exc, (TransientBackupError, StorageTransientError, psycopg.OperationalError, OperationalError,
                        InterfaceError)):
        return True
    if isinstance(exc, DumpFailed):
        return any(marker in str(exc) for marker in _DB_GONE)
    if isinstance(exc, OSError) and exc.errno in _STORAGE_FULL_OR_READ_ONLY:
        # a user waiting on a manual backup is told at once; an automatic one waits for ops to free space
        return record.backup_type == BackupRecord.Type.AUTOMATIC
    return False


def retry_delays(record: BackupRecord) -> list[int]:
    """Every wait between tries of the record after transient failures: the longest retry schedule.

    Doubling from BACKUPS_TASK_RETRY_DELAY up to BACKUPS_TASK_RETRY_MAX_DELAY; an automatic backup keeps
    trying while the waits add up to at most BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS, a manual one
    BACKUPS_TASK_MAX_RETRIES times (someone is waiting for it). The window also bounds the time the tries
    themselves take (backup_next_retry): slow tries end the schedule sooner.
    """
    base = max(1, backups_settings.BACKUPS_TASK_RETRY_DELAY)
    cap = max(base, backups_settings.BACKUPS_TASK_RETRY_MAX_DELAY)
    delays: list[int] = []
    if record.backup_type != BackupRecord.Type.AUTOMATIC:
        return [min(cap, base * 2 ** n) for n in range(backups_settings.BACKUPS_TASK_MAX_RETRIES)]
    window = backups_settings.BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS
    while sum(delays) + min(cap, base * 2 ** len(delays)) <= window and len(delays) < 1000:
        delays.append(min(cap, base * 2 ** len(delays)))
    return delays


def drop_dead_connection() -> None:
    """Close Django's connection if the server dropped it, so the next query opens a fresh one.

    Without this, writing a failure after the database restarted goes through the dead connection, fails
    too, and the record stays `running` until the reaper (the hard time limit plus grace).
    """
    if connection.connection is None:
        return
    try:
        usable = connection.is_usable()
    except DatabaseError:
        usable = False
    if not usable:
        logger.warning("the database connection was lost; writing through a new one")
        connection.close()


def is_connection_error(exc: BaseException) -> bool:
    """A database connection failure (worth one fresh connection and another try of the write)."""
    return isinstance(exc, (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError))


def write_through_fresh_connection(write: Callable[[], T], *, within: float = 30.0) -> T:
    """Run a state write (a record's failure or retry) on a live connection, waiting out a database restart.

    Tried again on a new connection while the server refuses us, for up to `within` seconds; after that the
    error goes up and the record is left to the reaper (its lock is free, so it is resent within its period).
    """
    deadline = time.monotonic() + within
    while True:
        drop_dead_connection()
        try:
            return write()
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() >= deadline:
                raise
            logger.warning("writing the backup's state failed (%s); trying a new connection", exc)
            connection.close()
            time.sleep(1.0)


def backup_next_retry(*, record_id: int, retries: int, error: str) -> int | None:
    """Seconds until the record's next try after a transient failure, or None after marking it failed for good."""
    from backups.catalog.records import backup_record_fail_unfinished

    record = BackupRecord.objects.filter(pk=record_id).first()
    if record is None:
        return None
    delays = retry_delays(record)
    spent = sum(delays[:retries])
    if record.backup_type == BackupRecord.Type.AUTOMATIC:
        # The window bounds the whole time since the backup was created, its tries included, not just the waits
        # (at 1 KB/s each try takes long): another try is sent only if, as long as this one, it ends within it.
        now = timezone.now()
        elapsed = max(0.0, (now - record.created_at).total_seconds())
        this_try = max(0.0, (now - (record.started_at or now)).total_seconds())
        window = backups_settings.BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS
        if retries < len(delays) and elapsed + delays[retries] + this_try <= window:
            return delays[retries]
        spent = max(spent, round(elapsed))
    elif retries < len(delays):
        return delays[retries]
    write_through_fresh_connection(lambda: backup_record_fail_unfinished(
        record_id=record_id, error=f"Gave up after {retries + 1} tries over {spent} s: {error}"))
    return None
