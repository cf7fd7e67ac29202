"""Producers of a tenant's dump: pg_dump (plain or custom) and Django's JSON Lines, streamed into a sink."""

from __future__ import annotations

import datetime
import io
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, DataError, connection, transaction
from django.db.models import DecimalField
from django_tenants.utils import schema_context

from backups.conf import backups_settings
from backups.core.errors import DumpFailed, SchemaNotFound, TransientBackupError
from backups.postgres import pgtools, privileges
from backups.postgres.pipes import piped


class ByteSink(Protocol):
    """Where dump bytes go (see backups.storage.sink.BackupSink)."""

    def write(self, data: bytes) -> None: ...


@dataclass
class DumpInfo:
    """What the manifest records about the dumped schema, taken from the dump's own snapshot."""

    server_version: str
    tool: str
    tool_version: str
    row_counts: dict[str, int] = field(default_factory=dict)
    migrations: dict[str, list[str]] = field(default_factory=dict)
    extensions: list[dict[str, str]] = field(default_factory=list)
    privileges: dict = field(default_factory=dict)


def _schema_tables(cur, schema: str) -> list[str]:
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        (schema,),
    )
    return [row[0] for row in cur.fetchall()]


def _migrations(cur, schema: str, tables: list[str]) -> dict[str, list[str]]:
    if "django_migrations" not in tables:
        return {}
    cur.execute(f"SELECT app, name FROM {pgtools.quote_ident(schema)}.django_migrations ORDER BY id")
    applied: dict[str, list[str]] = {}
    for app, name in cur.fetchall():
        applied.setdefault(app, []).append(name)
    return applied


def installed_extensions(cur) -> list[dict[str, str]]:
    """The database's extensions (a manifest records them: a restore needs them); `cur` a cursor or connection."""
    rows = cur.execute(
        "SELECT e.extname, n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY e.extname").fetchall()
    return [{"name": n, "schema": s, "version": v} for n, s, v in rows]


# ----------------------------------------------------------------------------- lock waits (BACKUPS_LOCK_WAIT_SECONDS)

# what PostgreSQL says when a wait for a lock was cut: lock_timeout on our connections, and pg_dump's
# --lock-wait-timeout (a statement_timeout around its LOCK TABLE statements)
LOCK_TIMEOUT = "canceling statement due to lock timeout"
_PG_DUMP_LOCK_TIMEOUT = re.compile(r"canceling statement due to (?:lock|statement) timeout.*?LOCK TABLE (.+?) IN ",
                                   re.S)
_LOCKABLE = ("r", "p", "S", "m", "f", "v")
_HOLDERS_SQL = """
SELECT n.nspname, c.relname, l.pid, l.granted, a.application_name,
       extract(epoch FROM now() - a.xact_start)::int
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND n.nspname = ANY(%s) AND c.relkind = ANY(%s)
ORDER BY n.nspname, c.relname, l.granted DESC, l.pid
"""


def lock_wait_seconds() -> float:
    """BACKUPS_LOCK_WAIT_SECONDS: how long any statement of a backup waits for a table lock (0: no bound)."""
    return max(0.0, float(backups_settings.BACKUPS_LOCK_WAIT_SECONDS or 0))


def lock_timeout_value() -> str:
    """BACKUPS_LOCK_WAIT_SECONDS as a PostgreSQL duration for lock_timeout / --lock-wait-timeout ('0': no bound)."""
    return f"{int(lock_wait_seconds() * 1000)}ms"


def bound_lock_waits(cur, *, local: bool = False) -> None:
    """Make the statements run on `cur`'s connection wait at most BACKUPS_LOCK_WAIT_SECONDS for a lock (`local`:
    for the current transaction only)."""
    if lock_wait_seconds() > 0:
        cur.execute("SELECT set_config('lock_timeout', %s, %s)", (lock_timeout_value(), local))


def locked_relations(schemas: list[str], conn=None) -> dict[str, list[str]]:
    """Per schema: its relations someone holds (or waits for) ACCESS EXCLUSIVE on, which a dump cannot read, each
    named with who holds it: `clinica_x.clinic_patient (held by pid 123, application 'psql', its transaction open
    for 40 s)`. Reads pg_locks and pg_stat_activity only: never waits for a lock itself."""
    if not schemas:
        return {}
    if conn is None:
        try:
            with pgtools.connect(autocommit=True) as own:
                return locked_relations(schemas, own)
        except psycopg.Error:
            return {}
    found: dict[str, dict[str, str]] = {}
    for schema, table, pid, granted, app, age in conn.execute(_HOLDERS_SQL, (list(schemas), list(_LOCKABLE))):
        name = f"{schema}.{table}"
        if name in found.get(schema, {}):
            continue
        who = [f"{'held' if granted else 'requested'} by pid {pid}"]
        if app:
            who.append(f"application {app!r}")
        if age is not None:
            who.append(f"its transaction open for {age} s")
        found.setdefault(schema, {})[name] = f"{name} ({', '.join(who)})"
    return {schema: list(tables.values()) for schema, tables in found.items()}


def lock_wait_error(schemas: list[str], *, named: str = "", what: str = "The backup") -> TransientBackupError:
    """The transient error of a backup whose tables stayed locked: which tables, and who holds them."""
    held = locked_relations(schemas)  # one look at pg_locks for all of them
    found = [d for s in schemas for d in held.get(s, [])]
    if not found and named:
        found = [t.strip() for t in named.split(",") if t.strip()]
    tables = "; ".join(found) if found else f"a table of {', '.join(schemas)}"
    return TransientBackupError(
        f"{what} waited more than {lock_wait_seconds():g} s (BACKUPS_LOCK_WAIT_SECONDS) for a lock on {tables}, "
        "which another session holds exclusively (a migration, a long transaction); it will be tried again.")


def pg_dump_lock_timeout(stderr: str) -> str | None:
    """The tables pg_dump named when its --lock-wait-timeout ran out (as in its LOCK TABLE statement), else None."""
    found = _PG_DUMP_LOCK_TIMEOUT.search(stderr)
    return found.group(1) if found else None


def pg_dump_lock_args() -> list[str]:
    """pg_dump's bound on its LOCK TABLE waits (BACKUPS_LOCK_WAIT_SECONDS), for the single and the batch dump."""
    return [f"--lock-wait-timeout={lock_timeout_value()}"] if lock_wait_seconds() > 0 else []


def pg_dump_command(bins: pgtools.PgBinaries, schema: str, fmt: str, snapshot: str | None) -> list[str]:
    """pg_dump arguments for one schema: no owner/ACL, strict names, our compression not its own, lock waits
    bounded by BACKUPS_LOCK_WAIT_SECONDS."""
    cmd = [bins.pg_dump, f"--schema={pgtools.quote_ident(schema)}", "--strict-names", "--no-owner", "--no-acl"]
    cmd += ["--format=custom", "--compress=0"] if fmt == "dump" else ["--format=plain"]
    cmd += pg_dump_lock_args()
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd


def dump_with_pg_dump(schema: str, fmt: str, sink: ByteSink) -> DumpInfo:
    """Stream `pg_dump -n schema` into `sink`; row counts come from the same exported snapshot.

    Every lock wait is bounded by BACKUPS_LOCK_WAIT_SECONDS (lock_timeout here, --lock-wait-timeout for pg_dump):
    a table that stays locked raises TransientBackupError naming it and its holder. Whatever ends the dump early
    (the soft time limit, a failed upload) never waits on the row-counting thread: its query is cancelled and the
    connection dropped, pg_dump killed, and the exception goes up at once."""
    bins = pgtools.binaries()
    read_size = backups_settings.BACKUPS_READ_SIZE
    conn = pgtools.connect()
    counter: threading.Thread | None = None
    count_errors: list[BaseException] = []
    abandoned = threading.Event()
    try:
        cur = conn.cursor()
        try:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            bound_lock_waits(cur, local=True)
            cur.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot, server_version = cur.fetchone()
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if cur.fetchone() is None:
                raise SchemaNotFound(f"Schema {schema!r} does not exist in the database.")
            tables = _schema_tables(cur, schema)
            check_large_objects(schema, cur)
            info = DumpInfo(server_version, "pg_dump", bins.version,
                            migrations=_migrations(cur, schema, tables), extensions=installed_extensions(cur),
                            privileges=privileges.capture(cur, [schema])[schema])
        except psycopg.errors.LockNotAvailable:
            raise lock_wait_error([schema]) from None

        def count() -> None:
            try:
                _count_rows(cur, schema, tables, info.row_counts, count_errors)
            finally:
                if abandoned.is_set():
                    conn.close()

        with piped(pg_dump_command(bins, schema, fmt, snapshot), env=pgtools.pg_dump_env(),
                   pipe_size=backups_settings.BACKUPS_PIPE_SIZE) as child:
            counter = threading.Thread(target=count, daemon=True)
            counter.start()
            for chunk in child.chunks(read_size):
                sink.write(chunk)
            returncode = child.wait()
            message = child.message
            counter.join()
    finally:
        _close_snapshot(conn, counter, abandoned)
    if returncode != 0:
        locked = pg_dump_lock_timeout(message)
        if locked is not None:
            raise lock_wait_error([schema], named=locked)
        raise DumpFailed(f"pg_dump exited with status {returncode}: {message}")
    if len(info.row_counts) != len(tables):
        if any(isinstance(e, psycopg.errors.LockNotAvailable) for e in count_errors):
            raise lock_wait_error([schema], what="Counting rows for the manifest")
        raise DumpFailed("Counting rows for the manifest failed.")
    return info


def _close_snapshot(conn: psycopg.Connection, counter: threading.Thread | None, abandoned: threading.Event) -> None:
    """Close the snapshot's connection without waiting on a row count still running on it (a rollback would wait
    for the connection's lock, which the counting thread holds until its query ends): cancel the query, give the
    thread a moment, and leave the connection for the thread to close if it is still inside libpq."""
    if counter is not None and counter.is_alive():
        try:
            conn.cancel_safe(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort: the connection is dropped below either way
            pass
        counter.join(timeout=2.0)
        if counter.is_alive():
            abandoned.set()
            if counter.is_alive():
                return  # the thread closes it when its query returns
    conn.close()  # the server ends the read-only transaction; no rollback round trip


_OID_COLUMNS_SQL = """
WITH RECURSIVE oid_types(oid) AS (
    SELECT 'pg_catalog.oid'::regtype::oid
    UNION
    SELECT t.oid FROM pg_type t JOIN oid_types o ON t.typtype = 'd' AND t.typbasetype = o.oid
), tables AS MATERIALIZED (
    SELECT n.nspname, c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(%s) AND c.relkind = 'r'
)
SELECT t.nspname, t.relname, a.attname FROM tables t JOIN pg_attribute a ON a.attrelid = t.oid
WHERE a.attnum > 0 AND NOT a.attisdropped AND a.atttypid IN (SELECT oid FROM oid_types)
ORDER BY t.nspname, t.relname, a.attnum
"""


def large_object_references(schemas: list[str], cur=None) -> dict[str, str]:
    """Per schema whose tables reference existing large objects: why its backup must fail, naming table.column.

    A column of type oid (or a domain over it, such as the `lo` extension's) may point at large objects, which
    live in pg_largeobject, outside every schema: `pg_dump -n` leaves them out and `--large-objects` would add
    every tenant's. The backup fails rather than carrying them: large object oids are database-wide, so a replace
    restore into the same database would collide with the live objects the old schema still references (or
    renumber them and break the references), and Django has no large-object field, so apps that use them are
    rare. Only existing large objects count: an oid column holding other oids (or nothing) backs up as usual.

    One catalog read for all `schemas` (a batch asks once for its members, not once a member); the data of a
    table is read only when it has such a column. `cur` (a psycopg or Django cursor) runs the check inside the
    dump's own snapshot; without one it runs on Django's connection.
    """
    if cur is None:
        with connection.cursor() as own:
            return large_object_references(schemas, own)
    q = pgtools.quote_ident
    cur.execute(_OID_COLUMNS_SQL, (list(schemas),))
    found: dict[str, list[str]] = {}
    for schema, table, column in cur.fetchall():
        cur.execute(f"SELECT count(DISTINCT t.{q(column)}) FROM {q(schema)}.{q(table)} t "
                    f"JOIN pg_catalog.pg_largeobject_metadata m ON m.oid = t.{q(column)}")
        count = cur.fetchone()[0]
        if count:
            found.setdefault(schema, []).append(f"{table}.{column} ({count} large object{'s' if count != 1 else ''})")
    return {schema: (f"Schema {schema!r} references large objects, which a backup of the schema cannot carry "
                     f"(pg_dump -n leaves them out and their oids are database-wide): {', '.join(columns)}. Keep "
                     "such contents in a bytea column or in files, or clear the references, then back up again.")
            for schema, columns in found.items()}


def check_large_objects(schema: str, cur=None) -> None:
    """Raise DumpFailed when the schema's tables reference large objects (see large_object_references)."""
    refusal = large_object_references([schema], cur).get(schema)
    if refusal:
        raise DumpFailed(refusal)


def _count_rows(cur, schema: str, tables: list[str], out: dict[str, int],
                errors: list[BaseException] | None = None) -> None:
    """Count each table's rows into `out` (lock waits bounded by the connection's lock_timeout); the error that
    stopped it goes to `errors`."""
    try:
        for table in tables:
            cur.execute(f"SELECT count(*) FROM {pgtools.quote_ident(schema)}.{pgtools.quote_ident(table)}")
            out[table] = cur.fetchone()[0]
    except Exception as exc:  # noqa: BLE001 - a missing count is reported by the caller
        if errors is not None:
            errors.append(exc)


def json_models() -> list:
    """The tenant apps' models (tables in the tenant's schema), dependencies first.

    Tables only in the public schema (tenants, backup records) never appear; content types and
    permissions are left out because migrating the target schema recreates them.
    """
    exclude = set(backups_settings.BACKUPS_JSON_EXCLUDE)
    by_name = {config.name: config for config in apps.get_app_configs()}
    app_list = []
    for app_name in settings.TENANT_APPS:
        config = by_name[app_name]
        models = [m for m in config.get_models() if m._meta.label_lower not in exclude and not m._meta.proxy]
        if models:
            app_list.append((config, models))
    return serializers.sort_dependencies(app_list, allow_cycles=True)


class ExactJSONEncoder(DjangoJSONEncoder):
    """DjangoJSONEncoder keeps milliseconds only; a backup keeps every microsecond."""

    def default(self, o):
        if isinstance(o, (datetime.datetime, datetime.time)):
            return o.isoformat()
        return super().default(o)


class _TextToSink(io.TextIOBase):
    """Buffers the serializer's text and hands it to the byte sink in large UTF-8 chunks."""

    def __init__(self, sink: ByteSink, flush_at: int = 1 << 20) -> None:
        self.sink, self.flush_at = sink, flush_at
        self.parts: list[str] = []
        self.pending = 0

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.pending += len(text)
        if self.pending >= self.flush_at:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.parts:
            self.sink.write("".join(self.parts).encode("utf-8"))
            self.parts, self.pending = [], 0


def _finite_decimals(model, rows: Iterable) -> Iterator:
    """The rows, refusing (DumpFailed) a DecimalField holding NaN or +-Infinity, before it is written.

    PostgreSQL's numeric holds them and Django's encoder writes them, but DecimalField.to_python refuses a
    non-finite value, so the line could never be loaded back. Carrying them would need a serializer and a
    loader of our own on both sides; the backup fails instead, naming the row, so it is never "succeeded" and
    unrestorable.
    """
    fields = [f for f in model._meta.local_concrete_fields if isinstance(f, DecimalField)]
    if not fields:
        yield from rows
        return
    for obj in rows:
        for f in fields:
            value = getattr(obj, f.attname)
            if value is not None and not value.is_finite():
                raise DumpFailed(
                    f"Table {model._meta.db_table!r}, row {model._meta.pk.column}={obj.pk!r}: column {f.column!r} "
                    f"holds {value}, which Django's JSON deserializer refuses, so a json backup could not be "
                    "restored. Correct the value, or back up in sql or dump format.")
        yield obj


_UNREADABLE = {
    # values PostgreSQL holds that Python's date/datetime/time cannot (infinity, BC, years past 9999, 24:00)
    "DateTimeField": "{c} < '0001-01-01 00:00:00+00' OR {c} >= '10000-01-01 00:00:00+00'",
    "DateField": "{c} < '0001-01-01' OR {c} >= '10000-01-01'",
    "TimeField": "{c} >= '24:00:00'",
}


def _unreadable_value(schema: str, model, exc: Exception) -> DumpFailed:
    """Name the table, column and row whose value psycopg could not turn into a Python object.

    Reading an `infinity` timestamp raises a DataError for the chunk, not the row; the model's date, datetime
    and time columns are searched for values outside Python's range, in the dump's own transaction (the error
    is raised client-side, so the transaction is still usable).
    """
    table, pk = model._meta.db_table, model._meta.pk.column
    q = pgtools.quote_ident
    try:
        with transaction.atomic(), connection.cursor() as cur:
            for f in model._meta.local_concrete_fields:
                condition = _UNREADABLE.get(f.get_internal_type())
                if condition is None:
                    continue
                cur.execute(f"SELECT {q(pk)}, {q(f.column)}::text FROM {q(schema)}.{q(table)} "
                            f"WHERE {condition.format(c=q(f.column))} ORDER BY {q(pk)} LIMIT 1")
                row = cur.fetchone()
                if row is not None:
                    return DumpFailed(
                        f"Table {table!r}, row {pk}={row[0]!r}: column {f.column!r} holds {row[1]!r}, which "
                        f"Django's {f.get_internal_type()} cannot hold, so a json backup cannot carry it. Correct "
                        "the value, or back up in sql or dump format.")
    except DatabaseError:
        pass  # a column whose type the search does not fit (a custom field): the error below still names the table
    return DumpFailed(f"Reading table {table!r} for the json backup failed: {exc}")


def dump_with_django(schema: str, sink: ByteSink) -> DumpInfo:
    """Django JSON Lines of the tenant apps' models, in one repeatable-read transaction of the schema.

    A value the line format cannot carry back (a non-finite decimal, an infinite or out-of-range date) fails
    the backup at once naming its table, column and row, and so do references to large objects."""
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            raise SchemaNotFound(f"Schema {schema!r} does not exist in the database.")
    models = json_models()
    with schema_context(schema):
        with connection.cursor() as cur:
            cur.execute("SELECT 1")  # lets django-tenants set search_path before the transaction starts
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SELECT current_setting('server_version')")
                server_version = cur.fetchone()[0]
                tables = _schema_tables(cur, schema)
                check_large_objects(schema, cur)
                info = DumpInfo(server_version, "django", _django_version(),
                                migrations=_migrations(cur, schema, tables), extensions=installed_extensions(cur),
                                privileges=privileges.capture(cur, [schema])[schema])
            for model in models:
                info.row_counts[model._meta.db_table] = model._default_manager.count()
            text = _TextToSink(sink)
            for model in models:
                queryset = model._default_manager.order_by(model._meta.pk.name).iterator(chunk_size=2000)
                try:
                    serializers.serialize("jsonl", _finite_decimals(model, queryset), stream=text,
                                          use_natural_foreign_keys=True, cls=ExactJSONEncoder)
                except (DataError, psycopg.DataError) as exc:
                    raise _unreadable_value(schema, model, exc) from None
            text.flush()
    return info


def _django_version() -> str:
    import django

    return django.get_version()
