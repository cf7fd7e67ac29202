"""What a killed process leaves behind (spool files, scratch databases), found and removed without ever taking a
live process's.

Spool files (a restore's `tb-restore-*.spool`, a batch's `tenant-backups-batch-*.dump`) are made by spool_create:
the process that makes one holds an exclusive `flock` on it for as long as it uses it. The kernel drops that lock
when the process dies, however it dies (kill -9, the OOM killer), and never before. The cleaner takes
`flock(LOCK_EX | LOCK_NB)` on each candidate and unlinks only a file it locked, while it holds the lock; a maker
that lost the instant between creating its file and locking it finds the file unlinked once it gets the lock, and
makes another. So a file is removed only when no live process holds it.

flock is exact between processes of ONE kernel (containers of one host included): each name carries this
kernel's boot id, and a cleaner looks only at its own kernel's names, so a spool directory shared by several hosts
(NFS) never has one host remove another's live file. flock over NFS is emulated with byte-range locks through the
server and is not reliable (a lost lease drops it): keep BACKUPS_SPOOL_DIR on a local disk. Files named before
this rule (no kernel tag) are never touched: no lock says whether their maker lives.

Scratch databases of verify drills are made inside scratch_database: its lock connection holds an advisory lock on
the database's name (a transaction-level lock in a transaction left open, as backups.locks does, so a transaction
pooler keeps it) from before CREATE DATABASE until after DROP DATABASE. The server drops the lock when the drill's
process dies, so the cleaner drops (WITH (FORCE)) only a `tb_verify_` database whose lock it could take, holding
it. Advisory locks are per database: each name carries the oid of the database the lock lives in, and a cleaner
looks only at names carrying its own, so installations sharing a server never judge each other's drills.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import re
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from backups import conf, pgtools
from backups.locks import lock_connection, lock_key

logger = logging.getLogger(__name__)

RESTORE_SPOOL = ("tb-restore-", ".spool")
BATCH_SPOOL = ("tenant-backups-batch-", ".dump")
SPOOL_KINDS = (RESTORE_SPOOL, BATCH_SPOOL)
SCRATCH_NAMESPACE = 0x7476  # a verify drill's scratch database, held by the drill while it exists
SCRATCH_PREFIX = "tb_verify_"


@dataclass
class LeftoversRemoved:
    """What one clean-up removed."""

    spool_files: int = 0
    spool_bytes: int = 0
    scratch_databases: list[str] = field(default_factory=list)
    scratch_bytes: int = 0


# ----------------------------------------------------------------------------- spool files


@functools.cache
def kernel_tag() -> str:
    """This kernel's boot id (12 hex digits; one for every container of the host), else the host's name."""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12]
        if re.fullmatch(r"[0-9a-f]{12}", boot):
            return boot
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"


def spool_dir() -> Path:
    """BACKUPS_SPOOL_DIR, default the system's temp dir (where reading and batch_backup spool)."""
    return Path(conf.get("BACKUPS_SPOOL_DIR") or tempfile.gettempdir())


def spool_create(directory: Path, kind: tuple[str, str]) -> tuple[int, str]:
    """A new spool file (mode 0600) named for this kernel, held with an exclusive flock: (fd, path).

    The lock lasts until the fd (and every duplicate of it) is closed or the process dies; the caller unlinks the
    file when done. The fd is not inherited by child processes (PEP 446; subprocess closes it too), so a child
    left running by a killed parent does not keep the file from being cleaned.
    """
    prefix, suffix = kind
    while True:
        fd, path = tempfile.mkstemp(prefix=f"{prefix}{kernel_tag()}-", suffix=suffix, dir=directory)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner that saw the file first holds it
            if os.fstat(fd).st_nlink:
                return fd, path
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a cleaner took it in the instant before our lock: make another


def _remove_if_dead(path: Path) -> int | None:
    """Unlink `path` if no live process holds its flock; the bytes it used, or None when it was left."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot check the spool file %s left by another process: %s", path, exc)
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                logger.warning("cannot lock the spool file %s: %s", path, exc)
            return None  # a live process holds it
        held = os.fstat(fd)
        try:
            named = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not held.st_nlink or (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return None  # its maker removed it, or another cleaner did
        os.unlink(path)
        return held.st_blocks * 512
    finally:
        os.close(fd)  # releases our lock


def spool_files_remove(directory: Path | None = None) -> tuple[int, int]:
    """Remove this kernel's spool files that no live process holds: (files, bytes)."""
    directory = directory or spool_dir()
    files = freed = 0
    try:
        names = os.listdir(directory)
    except OSError as exc:
        logger.warning("cannot list BACKUPS_SPOOL_DIR %s to remove what dead processes left: %s", directory, exc)
        return 0, 0
    for name in names:
        if not any(name.startswith(f"{prefix}{kernel_tag()}-") and name.endswith(suffix)
                   for prefix, suffix in SPOOL_KINDS):
            continue
        size = _remove_if_dead(directory / name)
        if size is not None:
            files, freed = files + 1, freed + size
    if files:
        logger.warning("removed %d spool files (%d bytes) left in %s by processes that died", files, freed,
                       directory)
    return files, freed


# ----------------------------------------------------------------------------- scratch databases


def _lock_database_oid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]


def _scratch_pattern(oid: int) -> re.Pattern[str]:
    return re.compile(rf"{SCRATCH_PREFIX}d{oid}_\d+_[0-9a-f]{{6}}")


def _hold(conn: psycopg.Connection, name: str) -> bool:
    """Try the name's lock in the open transaction of `conn` (kept until rollback, as backups.locks does)."""
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
    return bool(conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                             (lock_key(SCRATCH_NAMESPACE, name),)).fetchone()[0])


@contextlib.contextmanager
def scratch_database(record_id: int) -> Iterator[str]:
    """A fresh scratch database name for a drill of `record_id`, locked from now until the block ends.

    Create the database inside the block and drop it before leaving: while the block runs (and the process
    lives) no cleaner drops it; once the process dies, one does.
    """
    conn = lock_connection(f"scratch database of {record_id}")
    try:
        oid = _lock_database_oid(conn)
        conn.rollback()
        while True:
            name = f"{SCRATCH_PREFIX}d{oid}_{record_id}_{secrets.token_hex(3)}"
            if _hold(conn, name):
                break
            conn.rollback()  # a cleaner holds that name (a dead drill's): draw another
        yield name
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()


def scratch_databases_drop() -> tuple[list[str], int]:
    """Drop this installation's scratch databases whose drill is gone: (names, bytes)."""
    dropped: list[str] = []
    freed = 0
    with lock_connection("leftovers cleaner") as locks, pgtools.connect(autocommit=True) as admin:
        pattern = _scratch_pattern(_lock_database_oid(locks))
        locks.rollback()
        names = [row[0] for row in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",))]
        for name in filter(pattern.fullmatch, names):
            try:
                if not _hold(locks, name):
                    continue  # its drill is alive
                row = admin.execute("SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s",
                                    (name,)).fetchone()
                if row is None:
                    continue  # its drill, or another cleaner, dropped it
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
                freed += row[0] or 0
            except psycopg.Error as exc:
                logger.warning("could not drop the scratch database %s left by a dead drill: %s", name, exc)
            finally:
                locks.rollback()
    if dropped:
        logger.warning("dropped %d scratch databases (%d bytes) left by drills that died: %s", len(dropped), freed,
                       ", ".join(dropped))
    return dropped, freed


# ----------------------------------------------------------------------------- both


def leftovers_remove() -> LeftoversRemoved:
    """Remove what dead processes left (this kernel's spool files, this installation's scratch databases).

    Never raises: a part that cannot run (the database is down) is logged and skipped, the rest still runs.
    Partial files of the local storage backend are the reaper's abort_stale_uploads' (by age, past the hard limit).
    """
    result = LeftoversRemoved()
    try:
        result.spool_files, result.spool_bytes = spool_files_remove()
    except OSError as exc:
        logger.warning("could not remove the spool files dead processes left: %s", exc)
    try:
        result.scratch_databases, result.scratch_bytes = scratch_databases_drop()
    except psycopg.Error as exc:
        logger.warning("could not drop the scratch databases dead drills left: %s", exc)
    return result
