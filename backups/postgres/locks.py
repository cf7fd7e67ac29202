"""PostgreSQL advisory locks: held by a live worker, released by the server when that worker dies.

Each held lock has a connection of its own (BACKUPS_LOCK_DATABASE_URL, else Django's DATABASES settings),
never Django's: Django's connection is closed and reopened between queries (CONN_MAX_AGE, close_old_connections)
and, behind a transaction pooler, is a different server session from one statement to the next, so a session
lock taken on it is silently lost or leaked. The lock is a transaction-level one,
`pg_try_advisory_xact_lock(bigint)`, inside a transaction left open (idle, no snapshot, no xid) for as long as it
is held: a transaction pooler (PgBouncer's transaction mode, Supabase's port 6543) keeps a transaction on one
server connection, so the lock stays exactly as long as it, and ending it (or the worker's death) releases it.

Keys are 64-bit, derived from a namespace and an id of any size (or a name), so bigint ids never overflow.
A thread that already holds a key takes it again at once (re-entrant), as a session lock would: a replace
restore holds its tenant's lock while its own safety backup runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from typing import TypeVar

import psycopg
from django.db import models

from backups.conf import backups_settings
from backups.core.errors import TransientBackupError
from backups.postgres import pgtools

logger = logging.getLogger(__name__)
Row = TypeVar("Row", bound=models.Model)

RECORD_NAMESPACE = 0x7462  # one record is run by one worker at a time
DUMP_SLOT_NAMESPACE = 0x7463  # at most BACKUPS_MAX_CONCURRENT_DUMPS dumps against one database at a time
TENANT_NAMESPACE = 0x7474  # a backup and a replace restore of one tenant never run at once
LABEL_PREFIX = "tenant-backups lock: "
_local = threading.local()


def lock_key(namespace: int, ident: int | str) -> int:
    """The signed 64-bit advisory-lock key of (namespace, id or name).

    A hash, so any id and any name fit; two different pairs sharing a key (odds about n^2 / 2^65) would only
    wait for each other, never run together.
    """
    digest = hashlib.blake2b(f"{namespace}:{ident}".encode(), digest_size=8, person=b"tenant-backups").digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_connection(label: str) -> psycopg.Connection:
    """A new connection for holding one lock; its application_name says who holds it (pg_stat_activity)."""
    name = (LABEL_PREFIX + label)[:63]
    url = backups_settings.BACKUPS_LOCK_DATABASE_URL
    if url:
        return psycopg.connect(url, application_name=name)
    return pgtools.connect(application_name=name)


def _held() -> dict[int, int]:
    """Keys this thread holds, with how many times it took each."""
    if not hasattr(_local, "held"):
        _local.held = {}
    return _local.held


def _try(conn: psycopg.Connection, key: int) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0])


def lock_holder(conn: psycopg.Connection, key: int) -> str | None:
    """What holds `key` now, from its lock connection's label; None when it cannot be told (another role, no label).

    Advisory locks are per database: another database's holder of the same key is not this one's."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.classid::int8 = %s AND l.objid::int8 = %s LIMIT 1",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchone()
    name = row[0] if row else ""
    return name[len(LABEL_PREFIX):] if name and name.startswith(LABEL_PREFIX) else None


@contextlib.contextmanager
def _holding(keys: Sequence[int], label: str, *, wait_seconds: float = 0.0, poll_seconds: float = 1.0,
             on_busy=None) -> Iterator[int | None]:
    """Take the first free key of `keys`, retrying until `wait_seconds` passed; yields its index, or None.

    `on_busy(conn)` runs on the lock's connection when none could be taken, before None is yielded.
    """
    held = _held()
    mine = next((i for i, key in enumerate(keys) if key in held), None)
    if mine is not None:
        held[keys[mine]] += 1
        try:
            yield mine
        finally:
            held[keys[mine]] -= 1
        return
    conn = lock_connection(label)
    taken: int | None = None
    try:
        conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true),"
                     " set_config('application_name', %s, true)", ((LABEL_PREFIX + label)[:63],))
        deadline = time.monotonic() + wait_seconds
        while taken is None:
            taken = next((i for i, key in enumerate(keys) if _try(conn, key)), None)
            if taken is None:
                if time.monotonic() >= deadline:
                    break
                time.sleep(max(0.01, min(poll_seconds, deadline - time.monotonic())))
        if taken is None and on_busy is not None:
            on_busy(conn)
        if taken is not None:
            held[keys[taken]] = 1
        try:
            yield taken
        finally:
            if taken is not None:
                del held[keys[taken]]
    finally:
        _release(conn, label if taken is not None else "")


def _release(conn: psycopg.Connection, label: str) -> None:
    """End the lock's transaction (the server frees the lock at once), then close its connection."""
    try:
        conn.rollback()
    except psycopg.Error:
        if label:
            logger.warning("the connection holding lock %r broke while it was held: it was released early", label)
    finally:
        conn.close()


@contextlib.contextmanager
def advisory_lock(namespace: int, key: int | str, *, label: str = "") -> Iterator[bool]:
    """Try the lock once, on a connection of its own; yields whether it was taken."""
    with _holding([lock_key(namespace, key)], label or f"{namespace:#x}/{key}") as taken:
        yield taken is not None


@contextlib.contextmanager
def claim_unfinished(model: type[Row], pk: int, *, namespace: int,
                     finished: Collection[str]) -> Iterator[tuple[Row | None, bool]]:
    """Load a row by id and hold its advisory lock while the caller runs it: yields (row, claimed).

    `claimed` is False, and the caller must do nothing, when the row is missing, already finished (its
    `status` in `finished`), or held by another live worker. A row left unfinished by a dead worker has a
    free lock, so it is claimed again: that is what makes a redelivered task run once.
    """
    name = model._meta.verbose_name
    row = model.objects.filter(pk=pk).first()
    if row is None:
        logger.warning("%s %s does not exist; nothing to do", name, pk)
        yield None, False
        return
    if row.status in finished:
        yield row, False
        return
    with advisory_lock(namespace, pk, label=f"{model._meta.model_name} {pk}") as taken:
        if not taken:
            logger.info("%s %s is being run by another worker", name, pk)
            yield row, False
            return
        row.refresh_from_db()
        yield row, row.status not in finished


@contextlib.contextmanager
def dump_slot(slots: int, *, wait_seconds: float, poll_seconds: float = 1.0) -> Iterator[int | None]:
    """Take one of `slots` advisory locks, waiting up to `wait_seconds`; yields the slot, or None if all stay busy.

    The server releases a dead worker's slot with its connection, so a crash never leaks one.
    """
    keys = [lock_key(DUMP_SLOT_NAMESPACE, slot) for slot in range(max(1, slots))]
    with _holding(keys, "dump slot", wait_seconds=wait_seconds, poll_seconds=poll_seconds) as slot:
        yield slot


class TenantBusy(TransientBackupError):
    """Another backup or replace restore of the tenant holds its lock (a backup retries; a replace refuses)."""

    def __init__(self, *, schema_name: str, what: str, holder: str | None, waited: float) -> None:
        self.schema_name, self.holder, self.waited = schema_name, holder, waited
        running = holder or "another backup or restore of this tenant"
        after = f" (waited {waited:g} s for it to finish)" if waited else ""
        super().__init__(f"{what[:1].upper()}{what[1:]} cannot start: {running} is running on {schema_name}{after}. "
                         "Try again once it finishes.")


@contextlib.contextmanager
def tenant_lock(schema_name: str, *, what: str, wait_seconds: float = 0.0,
                poll_seconds: float = 0.5) -> Iterator[None]:
    """Hold the tenant's exclusive lock while a backup dumps it or a replace restore rewrites it.

    Keyed by schema name for now (records do not carry the tenant's `tenant_uid` yet); switching the key to
    the uid changes only this function. `what` names the caller for whoever finds the lock busy. Raises
    TenantBusy, naming what holds it when that can be told, if it stays busy for `wait_seconds`.
    """
    holder: list[str | None] = [None]

    def who(conn: psycopg.Connection) -> None:
        holder[0] = lock_holder(conn, key)

    key = lock_key(TENANT_NAMESPACE, schema_name)
    with _holding([key], what, wait_seconds=wait_seconds, poll_seconds=poll_seconds, on_busy=who) as taken:
        if taken is None:
            raise TenantBusy(schema_name=schema_name, what=what, holder=holder[0], waited=wait_seconds)
        yield


@contextlib.contextmanager
def hold_many(keys: Sequence[int], *, label: str) -> Iterator[set[int]]:
    """Try many advisory locks at once on ONE connection (a batch of records and tenants); yields those taken.

    One connection and one round trip whatever the count, instead of a connection per lock. Keys this thread
    already holds count as taken (re-entrant, like _holding), and keys taken here are registered for this
    thread, so single-record code run inside (a batch member run alone) re-enters them instead of waiting.
    """
    held = _held()
    mine = {k for k in keys if k in held}
    wanted = [k for k in dict.fromkeys(keys) if k not in held]
    conn = lock_connection(label) if wanted else None
    taken: set[int] = set()
    try:
        if conn is not None:
            conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
            rows = conn.execute("SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_xact_lock(k)",
                                (wanted,)).fetchall()
            taken = {row[0] for row in rows}
        for key in mine | taken:
            held[key] = held.get(key, 0) + 1
        try:
            yield mine | taken
        finally:
            for key in mine | taken:
                held[key] -= 1
                if not held[key]:
                    del held[key]
    finally:
        if conn is not None:
            _release(conn, label if taken else "")
