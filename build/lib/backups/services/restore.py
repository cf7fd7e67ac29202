"""Restore a backup: replace the live schema in one transaction, or verify it in a scratch database."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core import serializers
from django.core.management.color import no_style
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Model
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

from backups import pgtools
from backups.dumpers import json_models
from backups.errors import BackupError, RestoreFailed, StoredObjectDamaged, VerificationFailed
from backups.locks import tenant_lock
from backups.models import BackupEvent, BackupRecord
from backups.psql_guard import scan_sql_lines
from backups.reading import PlainStream, VerifiedBackup, byte_lines, open_backup, require_digest
from backups.selectors import schema_exists
from backups.storage import get_storage

from .backup_run import backup_run
from .records import backup_event_create, backup_record_create, backup_record_mark_damaged

logger = logging.getLogger(__name__)
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
STDERR_TAIL = 8000


@dataclass
class RestoreReport:
    """What a restore or a verify drill found."""

    record_id: int
    schema: str
    mode: str
    ok: bool
    row_counts: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # table -> (manifest, restored)
    safety_record_id: int | None = None
    message: str = ""

    @property
    def mismatches(self) -> dict[str, tuple[int, int | None]]:
        return {t: c for t, c in self.row_counts.items() if c[0] != c[1]}


def _q(name: str) -> str:
    return pgtools.quote_ident(name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _manifest_counts(record: BackupRecord) -> dict[str, int]:
    """Table -> rows, as the manifest recorded them; any table name works, since every use quotes it."""
    counts = record.manifest.get("row_counts") or {}
    usable = isinstance(counts, dict) and counts and all(
        isinstance(t, str) and t and "\x00" not in t and len(t.encode()) <= 63
        and isinstance(n, int) and not isinstance(n, bool) and n >= 0 for t, n in counts.items())
    if not usable:
        raise RestoreFailed(f"Backup {record.pk} has no usable row counts in its manifest; it cannot be verified.")
    return dict(counts)


def check_sql(schema: str, counts: dict[str, int]) -> str:
    """A DO block that raises (rolling the whole restore back) unless every table has its manifest's rows."""
    lines = ["DO $tb_check$", "DECLARE n bigint;", "BEGIN"]
    for table, expected in sorted(counts.items()):
        lines.append(f"  SELECT count(*) INTO n FROM {_q(schema)}.{_q(table)};")
        lines.append(f"  IF n <> {expected} THEN RAISE EXCEPTION 'restore check failed: % has % rows, the manifest "
                     f"says {expected}', {_literal(table)}, n; END IF;")
    lines += ["END", "$tb_check$;", ""]
    return "\n".join(lines)


def _abort_sql(message: str) -> str:
    return f"DO $tb_abort$ BEGIN RAISE EXCEPTION '%', {_literal(message)}; END $tb_abort$;\n"


# --- psql-driven restores (sql and dump formats) ---------------------------------------------------------

def _feed_plain(plain: PlainStream, out) -> None:
    for chunk in plain.chunks():
        out.write(chunk)


def _feed_through_pg_restore(bins: pgtools.PgBinaries, plain: PlainStream, out) -> None:
    """Custom-format archive -> pg_restore (as a script) -> out; pg_restore reads from a pipe, in order."""
    proc = subprocess.Popen([bins.pg_restore, "--no-owner", "--no-acl", "--file=-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pgtools.libpq_env(), bufsize=0)
    errors: list[BaseException] = []
    err_tail = bytearray()

    def feed() -> None:
        try:
            _feed_plain(plain, proc.stdin)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def drain() -> None:
        for chunk in iter(lambda: proc.stderr.read(4096), b""):
            err_tail.extend(chunk)
            del err_tail[:-STDERR_TAIL]

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for t in threads:
        t.start()
    try:
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            out.write(chunk)
    finally:
        rc = proc.wait()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    if rc != 0:
        raise RestoreFailed(f"pg_restore exited with status {rc}: {err_tail.decode('utf-8', 'replace').strip()}")


def _run_psql(dbname: str | None, prelude: str, body: Callable, epilogue: Callable[[], str]) -> None:
    """Pipe prelude + body + epilogue into `psql -1 -v ON_ERROR_STOP=1`: all of it commits, or none."""
    bins = pgtools.binaries()
    proc = subprocess.Popen(
        [bins.psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-o", os.devnull],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=pgtools.libpq_env(dbname=dbname), bufsize=0,
    )
    err_tail = bytearray()

    def drain() -> None:
        for chunk in iter(lambda: proc.stderr.read(4096), b""):
            err_tail.extend(chunk)
            del err_tail[:-STDERR_TAIL]

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    failure: BaseException | None = None
    try:
        proc.stdin.write(prelude.encode())
        body(proc.stdin)
        proc.stdin.write(epilogue().encode())
    except BrokenPipeError:
        pass  # psql stopped at an error; its message is on stderr
    except BaseException as exc:
        failure = exc
        try:
            proc.stdin.write(_abort_sql(f"restore aborted: {exc}").encode())
        except OSError:
            pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        rc = proc.wait()
        drainer.join()
    if failure is not None:
        raise failure if isinstance(failure, BackupError) else RestoreFailed(str(failure)) from failure
    if rc != 0:
        message = err_tail.decode("utf-8", "replace").strip().splitlines()
        detail = next((m for m in message if "ERROR" in m), message[-1] if message else "no message")
        raise RestoreFailed(f"psql exited with status {rc}: {detail}")


def _sql_source(record: BackupRecord, backup: VerifiedBackup) -> Callable:
    """A writer of the SQL psql would read: the plain dump itself, or pg_restore's script of the archive."""
    if record.format == BackupRecord.Format.DUMP:
        bins = pgtools.binaries()
        return lambda out: _feed_through_pg_restore(bins, backup.plain(), out)
    return lambda out: _feed_plain(backup.plain(), out)


def _prescan_sql(record: BackupRecord, backup: VerifiedBackup) -> None:
    """Read the whole SQL once before psql starts: a foreign psql meta-command refuses the restore."""
    import queue

    chunks: queue.Queue = queue.Queue(maxsize=8)
    done = object()
    errors: list[BaseException] = []

    class _Pipe:
        def write(self, data: bytes) -> int:
            chunks.put(bytes(data))
            return len(data)

    def produce() -> None:
        try:
            _sql_source(record, backup)(_Pipe())
        except BaseException as exc:  # noqa: BLE001 - handed to the scanning thread
            errors.append(exc)
        finally:
            chunks.put(done)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()

    def drain():
        while (chunk := chunks.get()) is not done:
            yield chunk

    try:
        scan_sql_lines(byte_lines(drain()))
    finally:
        while producer.is_alive():  # let the producer finish after an early refusal
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass
        producer.join()
    if errors:
        raise errors[0]


# --- Django-driven restores (json format) ----------------------------------------------------------------

def _migrate_schema(schema: str, migrations: dict[str, list[str]]) -> None:
    """Create the tenant tables at the migration state the manifest records."""
    connection.set_schema(schema, include_public=False)
    MigrationRecorder(connection).ensure_schema()
    connection.set_schema(schema, include_public=True)
    executor = MigrationExecutor(connection)
    known = executor.loader.graph.nodes
    targets = []
    for app, names in migrations.items():
        if (app, names[-1]) not in known:
            raise RestoreFailed(f"The backup needs migration {app}.{names[-1]}, which this code does not have.")
        targets.append((app, names[-1]))
    executor.migrate(targets)
    emit_post_migrate_signal(0, False, connection.alias)


def _flush(batch: list) -> None:
    """Insert a batch raw, as loaddata does: auto_now and other pre_save hooks must not rewrite the rows."""
    if not batch:
        return
    model = type(batch[0].object)
    if model._meta.parents:
        for deserialized in batch:
            deserialized.save()
    else:
        fields = list(model._meta.local_concrete_fields)
        step = max(1, 60000 // max(1, len(fields)))
        objs = [d.object for d in batch]
        for start in range(0, len(objs), step):
            model._base_manager._insert(objs[start:start + step], fields=fields, raw=True)
        for deserialized in batch:
            for name, values in (deserialized.m2m_data or {}).items():
                getattr(deserialized.object, name).set(values)
    batch.clear()


def allowed_json_models() -> dict[str, type[Model]]:
    """label_lower -> model of what a JSON restore may write: exactly what a JSON backup dumps, the models of
    TENANT_APPS, whose tables the tenant's schema has. A model only in SHARED_APPS (the tenant list, its
    domains, every tenant's backup records) has tables only in public and is never accepted; the loader
    also runs with the tenant's schema alone on its search path, so an app in both lists writes there."""
    return {m._meta.label_lower: m for m in json_models()}


def _prescan_json(backup: VerifiedBackup) -> None:
    """Refuse the whole restore, before anything is written, if a line names a model outside the tenant's apps."""
    allowed = allowed_json_models()
    for number, line in enumerate(backup.plain().lines(), 1):
        if not line.strip():
            continue
        try:
            label = json.loads(line).get("model")
        except (ValueError, AttributeError):
            raise RestoreFailed(f"Line {number} of the JSON backup is not a JSON object; nothing was "
                                "restored.") from None
        if not isinstance(label, str) or label.lower() not in allowed:
            raise RestoreFailed(f"Line {number} of the JSON backup holds {label!r}, which is not a model of the "
                                "tenant's own apps; nothing was restored.")


def _load_jsonl(plain: PlainStream) -> set[type[Model]]:
    """Insert every object of the stream in batches; returns the models seen."""
    seen: set[type[Model]] = set()
    batch: list = []
    for deserialized in serializers.deserialize("jsonl", plain.lines(), ignorenonexistent=False):
        model = type(deserialized.object)
        if batch and (type(batch[0].object) is not model or len(batch) >= 1000):
            _flush(batch)
        seen.add(model)
        batch.append(deserialized)
    _flush(batch)
    return seen


def _load_json_into(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int]) -> dict:
    _prescan_json(backup)
    with connection.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {_q(schema)}")
    with schema_context(schema):
        connection.set_schema(schema, include_public=False)  # nothing the loader writes can land in public
        _migrate_schema(schema, record.manifest.get("migrations") or {})
        connection.set_schema(schema, include_public=False)
        models = _load_jsonl(backup.plain())
        with connection.cursor() as cur:
            for sql in connection.ops.sequence_reset_sql(no_style(), list(models)):
                cur.execute(sql)
            found = {}
            for table in counts:
                cur.execute(f"SELECT count(*) FROM {_q(schema)}.{_q(table)}")
                found[table] = cur.fetchone()[0]
    return found


# --- entry points ----------------------------------------------------------------------------------------

def _checked_record(schema: str, record: BackupRecord) -> None:
    """Only this tenant's own, good, checkable backups: same schema, same identity, succeeded, not damaged."""
    if record.schema_name != schema:
        raise RestoreFailed(f"Backup {record.pk} was taken from schema {record.schema_name!r}, not {schema!r}.")
    if record.status != BackupRecord.Status.SUCCEEDED:
        raise RestoreFailed(f"Backup {record.pk} is {record.status}; only a succeeded backup can be restored.")
    owner = get_tenant_model().objects.filter(schema_name=schema).values_list("tenant_uid", flat=True).first()
    if owner is None or owner != record.tenant_uid:
        raise RestoreFailed(f"Backup {record.pk} belongs to another tenant identity than the one that owns schema "
                            f"{schema!r} now (a deleted tenant's backups are never restored into a later one).")
    if record.damaged_at is not None:
        raise RestoreFailed(f"Backup {record.pk} failed its checksum on {record.damaged_at:%Y-%m-%d %H:%M} UTC and is "
                            "marked damaged; it is never restored.")
    require_digest(record)


def _damaged(record: BackupRecord, exc: BaseException) -> None:
    if isinstance(exc, StoredObjectDamaged):
        backup_record_mark_damaged(record=record, error=str(exc))


def _count_tables(schema: str, tables: list[str]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    with connection.cursor() as cur:
        for table in tables:
            cur.execute("SELECT to_regclass(%s)", (f"{_q(schema)}.{_q(table)}",))
            if cur.fetchone()[0] is None:
                found[table] = None
                continue
            cur.execute(f"SELECT count(*) FROM {_q(schema)}.{_q(table)}")
            found[table] = cur.fetchone()[0]
    return found


def restore_replace(*, schema: str, record: BackupRecord, actor: dict | None = None,
                    safety_backup: bool = True) -> RestoreReport:
    """Replace the live schema with the backup while holding the tenant's lock, so no backup of it runs meanwhile.

    Refuses at once (TenantBusy, naming what runs) while a backup or another replace of the tenant holds it.
    """
    with tenant_lock(schema, what=f"replace restore from backup {record.pk}"):
        return _restore_replace_locked(schema=schema, record=record, actor=actor, safety_backup=safety_backup)


def _restore_replace_locked(*, schema: str, record: BackupRecord, actor: dict | None = None,
                            safety_backup: bool = True) -> RestoreReport:
    """Replace the live schema with the backup, atomically; the old schema stays if anything fails.

    A safety backup of the live schema is taken first. The live schema is renamed aside, the backup
    loaded, row counts checked against the manifest and the old schema dropped, all in one transaction.
    """
    _checked_record(schema, record)
    counts = _manifest_counts(record)
    report = RestoreReport(record.pk, schema, "replace", ok=False)
    live = schema_exists(schema)
    if live and safety_backup:
        safety = backup_record_create(schema_name=schema, tenant=record.tenant, fmt=record.format,
                                      backup_type=BackupRecord.Type.PRE_RESTORE, requested_by=actor)
        safety = backup_run(record_id=safety.pk)
        report.safety_record_id = safety.pk
        if safety.status != BackupRecord.Status.SUCCEEDED:
            raise RestoreFailed(f"The safety backup before the restore failed ({safety.error}); nothing was changed.")
    aside = f"{schema[:40]}_old_{secrets.token_hex(4)}"
    storage = get_storage(record.storage_backend)
    try:
        with open_backup(storage, record) as backup:
            if record.format == BackupRecord.Format.JSON:
                with transaction.atomic():
                    if live:
                        with connection.cursor() as cur:
                            cur.execute(f"ALTER SCHEMA {_q(schema)} RENAME TO {_q(aside)}")
                    found = _load_json_into(schema, record, backup, counts)
                    report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
                    if report.mismatches:
                        raise VerificationFailed(f"Restored row counts differ from the manifest: {report.mismatches}")
                    if live:
                        with connection.cursor() as cur:
                            cur.execute(f"DROP SCHEMA {_q(aside)} CASCADE")
            else:
                _prescan_sql(record, backup)
                prelude = f"ALTER SCHEMA {_q(schema)} RENAME TO {_q(aside)};\n" if live else ""
                then = check_sql(schema, counts) + (f"DROP SCHEMA {_q(aside)} CASCADE;\n" if live else "")
                _run_psql(None, prelude, _sql_source(record, backup), lambda: then)
                found = _count_tables(schema, list(counts))
                report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
    except BackupError as exc:
        _damaged(record, exc)
        report.message = str(exc)
        backup_event_create(record=record, action=BackupEvent.Action.RESTORE, actor=actor,
                            details={"ok": False, "error": str(exc), "safety_record_id": report.safety_record_id})
        raise
    report.ok = True
    report.message = f"Schema {schema} replaced with backup {record.pk}."
    backup_event_create(record=record, action=BackupEvent.Action.RESTORE, actor=actor,
                        details={"ok": True, "safety_record_id": report.safety_record_id})
    return report


def _scratch_counts(dbname: str, schema: str, tables: list[str]) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    with pgtools.connect(dbname=dbname, autocommit=True) as conn:
        for table in tables:
            row = conn.execute("SELECT to_regclass(%s)", (f"{_q(schema)}.{_q(table)}",)).fetchone()
            found[table] = (conn.execute(f"SELECT count(*) FROM {_q(schema)}.{_q(table)}").fetchone()[0]
                            if row[0] else None)
    return found


class _Rollback(Exception):
    pass


def restore_verify(*, schema: str, record: BackupRecord, actor: dict | None = None) -> RestoreReport:
    """Restore into a scratch database (json: a scratch schema, rolled back), compare row counts, drop it."""
    _checked_record(schema, record)
    counts = _manifest_counts(record)
    report = RestoreReport(record.pk, schema, "verify", ok=False)
    storage = get_storage(record.storage_backend)
    try:
        with open_backup(storage, record) as backup:
            if record.format == BackupRecord.Format.JSON:
                scratch = f"tb_verify_{record.pk}_{secrets.token_hex(3)}"
                found: dict = {}
                try:
                    with transaction.atomic():
                        found.update(_load_json_into(scratch, record, backup, counts))
                        raise _Rollback
                except _Rollback:
                    pass
                report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
            else:
                dbname = f"tb_verify_{record.pk}_{secrets.token_hex(3)}"
                with pgtools.connect(autocommit=True) as admin:
                    admin.execute(f"CREATE DATABASE {_q(dbname)} TEMPLATE template0 ENCODING 'UTF8'")
                try:
                    _prescan_sql(record, backup)
                    prelude = "".join(
                        f"CREATE SCHEMA IF NOT EXISTS {_q(e['schema'])};\n"
                        f"CREATE EXTENSION IF NOT EXISTS {_q(e['name'])} WITH SCHEMA {_q(e['schema'])};\n"
                        for e in record.manifest.get("extensions") or [] if IDENT_RE.fullmatch(e.get("name", ""))
                    )
                    _run_psql(dbname, prelude, _sql_source(record, backup), lambda: "")
                    found = _scratch_counts(dbname, schema, list(counts))
                finally:
                    with pgtools.connect(autocommit=True) as admin:
                        admin.execute(f"DROP DATABASE IF EXISTS {_q(dbname)} WITH (FORCE)")
                report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
    except BackupError as exc:
        _damaged(record, exc)
        report.message = str(exc)
    else:
        report.ok = not report.mismatches
        report.message = ("Row counts match the manifest." if report.ok
                          else f"Row counts differ from the manifest: {report.mismatches}")
    backup_event_create(record=record, action=BackupEvent.Action.VERIFY, actor=actor,
                        details={"ok": report.ok, "message": report.message[:500]})
    return report


def public_schema() -> str:
    """The public schema's name (where records live)."""
    return get_public_schema_name()
