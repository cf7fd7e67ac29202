"""What a killed process leaves behind (spool files, scratch databases), found and removed without ever taking a
live process's.

Spool files are backups.storage.spools' (each held with a flock while used; spool_files_remove takes the dead ones').

Scratch databases of verify drills are made inside scratch_database: its lock connection holds an advisory lock on
the database's name (a transaction-level lock in a transaction left open, as backups.postgres.locks does, so a
transaction pooler keeps it) from before CREATE DATABASE until after DROP DATABASE. The server drops the lock when the
drill's process dies, so the cleaner drops (WITH (FORCE)) only a `tb_verify_` database whose lock it could take, holding
it. Advisory locks are per database: each name carries the oid of the database the lock lives in, and a cleaner
looks only at names carrying its own, so installations sharing a server never judge each other's drills.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from backups.postgres import pgtools
from backups.postgres.locks import lock_connection, lock_key
from backups.storage.spools import spool_files_remove

logger = logging.getLogger(__name__)

SCRATCH_NAMESPACE = 0x7476  # a verify drill's scratch database, held by the drill while it exists
SCRATCH_PREFIX = "tb_verify_"


@dataclass
class LeftoversRemoved:
    """What one clean-up removed."""

    spool_files: int = 0
    spool_bytes: int = 0
    scratch_databases: list[str] = field(default_factory=list)
    scratch_bytes: int = 0


# ----------------------------------------------------------------------------- scratch databases


def _lock_database_oid(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]


def _scratch_pattern(oid: int) -> re.Pattern[str]:
    return re.compile(rf"{SCRATCH_PREFIX}d{oid}_\d+_[0-9a-f]{{6}}")


def _hold(conn: psycopg.Connection, name: str) -> bool:
    """Try the name's lock in the open transaction of `conn` (kept until rollback, as backups.postgres.locks does)."""
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
