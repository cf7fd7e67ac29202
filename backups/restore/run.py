"""Restore a backup: replace the live schema in one transaction, or verify it in a scratch database."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from django.core import serializers
from django.core.management.color import no_style
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import Model
from django_tenants.utils import get_public_schema_name, get_tenant_model, schema_context

from backups.backup.run import backup_run
from backups.catalog.records import backup_event_create, backup_record_create, backup_record_mark_damaged
from backups.catalog.selectors import schema_exists
from backups.catalog.sources import copy_stands_in, open_backup_or_copy
from backups.core.errors import BackupError, RestoreFailed, StoredObjectDamaged, VerificationFailed
from backups.core.naming import PUBLIC_UID
from backups.models import BackupEvent, BackupRecord
from backups.postgres import pgtools, privileges
from backups.postgres.dumpers import json_models
from backups.postgres.json_scope import json_restore_refusal
from backups.postgres.leftovers import scratch_database
from backups.postgres.locks import tenant_lock
from backups.postgres.pg_depends import dependents_outside, prepare_scratch
from backups.postgres.pipes import piped
from backups.postgres.sql_loader import load_script
from backups.restore.files import files_restore, files_verify
from backups.storage import StorageError, get_storage
from backups.storage.reading import PlainStream, VerifiedBackup, require_digest

logger = logging.getLogger(__name__)
READ_SIZE = 1 << 20


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
    source_note: str = ""  # empty: read from the primary; else why the copy in the second target was read
    files: dict = field(default_factory=dict)  # replace: written/kept/deleted; verify: checked and problems

    @property
    def mismatches(self) -> dict[str, tuple[int, int | None]]:
        return {t: c for t, c in self.row_counts.items() if c[0] != c[1]}


def _q(name: str) -> str:
    return pgtools.quote_ident(name)


def manifest_counts(record: BackupRecord) -> dict[str, int]:
    """Table -> rows, as the manifest recorded them; any table name works, since every use quotes it."""
    counts = record.manifest.get("row_counts") or {}
    usable = isinstance(counts, dict) and counts and all(
        isinstance(t, str) and t and "\x00" not in t and len(t.encode()) <= 63
        and isinstance(n, int) and not isinstance(n, bool) and n >= 0 for t, n in counts.items())
    if not usable:
        raise RestoreFailed(f"Backup {record.pk} has no usable row counts in its manifest; it cannot be verified.")
    return dict(counts)


def table_counts(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, int | None]:
    """Rows per table as this connection's transaction sees them (None for a table that is not there)."""
    found: dict[str, int | None] = {}
    for table in tables:
        row = conn.execute("SELECT to_regclass(%s)", (f"{_q(schema)}.{_q(table)}",)).fetchone()
        found[table] = (conn.execute(f"SELECT count(*) FROM {_q(schema)}.{_q(table)}").fetchone()[0]
                        if row[0] else None)
    return found


# --- SQL-driven restores (sql and dump formats): the script goes to the server through psycopg -------------

@contextlib.contextmanager
def pg_restore_script(plain: PlainStream, options: tuple[str, ...] = ("--file=-",)) -> Iterator[Iterator[bytes]]:
    """Custom-format archive -> `pg_restore --file=-` -> the script's chunks. pg_restore only writes SQL here (no
    connection, no secrets in its environment); it is killed if the reader stops early. `options` replace
    `--file=-` (`--list`: the archive's table of contents instead; `--use-list=F --file=-`: some entries only)."""
    bins = pgtools.binaries()

    def feed(write: Callable[[bytes], object]) -> None:
        for chunk in plain.chunks():
            write(chunk)

    with piped([bins.pg_restore, "--no-owner", "--no-acl", *options], feed=feed, env=pgtools.tool_env()) as child:

        def script() -> Iterator[bytes]:
            yield from child.chunks(READ_SIZE)
            rc = child.wait()
            if rc != 0:
                raise RestoreFailed(f"pg_restore exited with status {rc}: {child.message}")

        yield script()


@contextlib.contextmanager
def _script(record: BackupRecord, backup: VerifiedBackup) -> Iterator[Iterator[bytes]]:
    """The SQL script of a verified backup: the plain dump itself, or pg_restore's script of the archive."""
    if record.format == BackupRecord.Format.DUMP:
        with pg_restore_script(backup.plain()) as chunks:
            yield chunks
    else:
        yield backup.plain().prefetched(READ_SIZE)


def _loaded(conn: psycopg.Connection, record: BackupRecord, backup: VerifiedBackup) -> None:
    try:
        with _script(record, backup) as chunks:
            load_script(conn, chunks)
    except OSError as exc:
        raise RestoreFailed(f"Reading the backup failed: {exc.strerror or exc}.") from None


def _refuse_dependents(conn: psycopg.Connection, schema: str, live_name: str) -> None:
    """Refuse, naming them, when objects outside the tenant depend on its objects: dropping the replaced schema
    (CASCADE) would drop them silently, and re-creating foreign objects is not a restore's business."""
    outside = dependents_outside(conn, schema)
    if outside:
        shown = "; ".join(outside[:10]) + (f"; and {len(outside) - 10} more" if len(outside) > 10 else "")
        raise RestoreFailed(f"Objects outside schema {live_name} depend on it and a replace would drop them: "
                            f"{shown}. Nothing was changed; remove or move them first.")


def _aside_name(schema: str) -> str:
    """Where a replace moves the live schema for the length of its transaction."""
    return f"{schema[:40]}_old_{secrets.token_hex(4)}"


def require_counts(counts: dict[str, int], found: dict[str, int | None]) -> None:
    """Raise (rolling the replace back) unless every table has the rows its manifest says."""
    mismatches = {t: (n, found.get(t)) for t, n in counts.items() if found.get(t) != n}
    if mismatches:
        raise VerificationFailed(f"restore check failed: restored row counts differ from the manifest: {mismatches}")


def _replace_from_script(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int],
                         live: bool) -> dict[str, int | None]:
    """One transaction on our own connection: rename the live schema aside, load, check counts, drop the old one.

    Nothing commits unless the whole script arrived and the counts matched: a dead worker's connection closes
    and the server rolls everything back, so the live schema is never half-restored and nothing stays aside.
    """
    aside = _aside_name(schema)
    with pgtools.connect() as conn:
        if live:
            conn.execute(f"ALTER SCHEMA {_q(schema)} RENAME TO {_q(aside)}")
        _loaded(conn, record, backup)
        privileges.apply(conn.cursor(), schema, record.manifest)
        found = table_counts(conn, schema, list(counts))
        require_counts(counts, found)
        if live:
            _refuse_dependents(conn, aside, schema)
            conn.execute(f"DROP SCHEMA {_q(aside)} CASCADE")
        conn.commit()
    return found


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
    if schema == get_public_schema_name() or record.tenant_uid == PUBLIC_UID:
        raise RestoreFailed("The public schema's backups hold every tenant's shared data; only recover_deployment "
                            "restores them, on an empty database.")
    if record.schema_name != schema:
        raise RestoreFailed(f"Backup {record.pk} was taken from schema {record.schema_name!r}, not {schema!r}.")
    stands_in = (record.damaged_at is not None or record.stage == BackupRecord.Stage.MISSING) and \
        copy_stands_in(record)  # its primary object is gone or damaged, its checked copy is not
    if record.status != BackupRecord.Status.SUCCEEDED and not stands_in:
        raise RestoreFailed(f"Backup {record.pk} is {record.status}; only a succeeded backup can be restored.")
    owner = get_tenant_model().objects.filter(schema_name=schema).values_list("tenant_uid", flat=True).first()
    if owner is None or owner != record.tenant_uid:
        raise RestoreFailed(f"Backup {record.pk} belongs to another tenant identity than the one that owns schema "
                            f"{schema!r} now (a deleted tenant's backups are never restored into a later one).")
    if record.damaged_at is not None and not stands_in:
        raise RestoreFailed(f"Backup {record.pk} failed its checksum on {record.damaged_at:%Y-%m-%d %H:%M} UTC and is "
                            "marked damaged; it is never restored.")
    require_digest(record)


def _damaged(record: BackupRecord, exc: BaseException) -> None:
    if isinstance(exc, StoredObjectDamaged):
        backup_record_mark_damaged(record=record, error=str(exc))


# --- shared with side copies, clones and objects restores (backups.restore.side, .clone, .objects) -------------

def checked_record(schema: str, record: BackupRecord) -> None:
    """Only this tenant's own, good, checkable backups (see _checked_record)."""
    _checked_record(schema, record)


def require_restorable(record: BackupRecord) -> None:
    """A backup any restore may read, whoever it is for (a clone's origin may be gone): not the public schema's,
    succeeded, not marked damaged (unless a checked copy stands in), with a digest to check its bytes against."""
    if record.tenant_uid == PUBLIC_UID:
        raise RestoreFailed("The public schema's backups hold every tenant's shared data; only recover_deployment "
                            "restores them, on an empty database.")
    stands_in = (record.damaged_at is not None or record.stage == BackupRecord.Stage.MISSING) and \
        copy_stands_in(record)
    if record.status != BackupRecord.Status.SUCCEEDED and not stands_in:
        raise RestoreFailed(f"Backup {record.pk} is {record.status}; only a succeeded backup can be restored.")
    if record.damaged_at is not None and not stands_in:
        raise RestoreFailed(f"Backup {record.pk} failed its checksum on {record.damaged_at:%Y-%m-%d %H:%M} UTC and is "
                            "marked damaged; it is never restored.")
    require_digest(record)


def mark_if_damaged(record: BackupRecord, exc: BaseException) -> None:
    """Mark the record damaged when `exc` says its stored object failed its check."""
    _damaged(record, exc)


def load_verified_script(conn: psycopg.Connection, record: BackupRecord, backup: VerifiedBackup) -> None:
    """Send the verified backup's SQL script (a sql dump, or pg_restore's script of a dump archive) to `conn`,
    inside its transaction; raises before anything commits."""
    _loaded(conn, record, backup)


def load_json_into(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int]) -> dict:
    """Create `schema`, migrate it to the manifest's state and load the verified json backup into it, inside
    the caller's transaction on Django's connection; returns the rows found per table."""
    return _load_json_into(schema, record, backup, counts)


def aside_name(schema: str) -> str:
    """A free name to move `schema` aside under for the length of one transaction."""
    return _aside_name(schema)


def restore_replace(*, schema: str, record: BackupRecord, actor: dict | None = None, safety_backup: bool = True,
                    safety_record_id: int | None = None,
                    on_safety: Callable[[int], None] | None = None) -> RestoreReport:
    """Replace the live schema with the backup while holding the tenant's lock, so no backup of it runs meanwhile.

    Refuses at once (TenantBusy, naming what runs) while a backup or another replace of the tenant holds it.
    `safety_record_id` is a safety backup an earlier attempt of the same job took (reused: a failed attempt
    changes nothing, so it still holds the live data); `on_safety` is told the safety backup's id at once.
    """
    with tenant_lock(schema, what=f"replace restore from backup {record.pk}"):
        return _restore_replace_locked(schema=schema, record=record, actor=actor, safety_backup=safety_backup,
                                       safety_record_id=safety_record_id, on_safety=on_safety)


def _refuse_before_changing(schema: str, record: BackupRecord, live: bool) -> None:
    """What a replace would drop without a word, or could not put back, is refused before the safety backup and
    before any change."""
    with pgtools.connect() as conn:
        privileges.require_roles(conn.cursor(), record.manifest)
        if live:
            _refuse_dependents(conn, schema, schema)
    if live and record.format == BackupRecord.Format.JSON:
        refusal = json_restore_refusal(schema)
        if refusal:
            raise RestoreFailed(refusal)


def _safety_backup(schema: str, record: BackupRecord, actor: dict | None, reuse_id: int | None,
                   on_safety: Callable[[int], None] | None) -> int:
    """A full `dump` of the live schema, whatever format is restored (a json backup holds only Django's models)."""
    if reuse_id:
        earlier = BackupRecord.objects.filter(pk=reuse_id, tenant_uid=record.tenant_uid, schema_name=schema,
                                              backup_type=BackupRecord.Type.PRE_RESTORE,
                                              status=BackupRecord.Status.SUCCEEDED).first()
        if earlier is not None:
            return earlier.pk
    safety = backup_record_create(schema_name=schema, tenant=record.tenant, fmt=BackupRecord.Format.DUMP,
                                  backup_type=BackupRecord.Type.PRE_RESTORE, requested_by=actor)
    safety = backup_run(record_id=safety.pk)
    if safety.status != BackupRecord.Status.SUCCEEDED:
        raise RestoreFailed(f"The safety backup before the restore failed ({safety.error}); nothing was changed.")
    if on_safety is not None:
        on_safety(safety.pk)
    return safety.pk


def _restore_replace_locked(*, schema: str, record: BackupRecord, actor: dict | None = None,
                            safety_backup: bool = True, safety_record_id: int | None = None,
                            on_safety: Callable[[int], None] | None = None) -> RestoreReport:
    """Replace the live schema with the backup, atomically; the old schema stays if anything fails.

    A safety backup of the live schema is taken first. The live schema is renamed aside, the backup
    loaded, row counts checked against the manifest and the old schema dropped, all in one transaction.
    """
    _checked_record(schema, record)
    counts = manifest_counts(record)
    report = RestoreReport(record.pk, schema, "replace", ok=False)
    live = schema_exists(schema)
    try:
        _refuse_before_changing(schema, record, live)
        if live and safety_backup:
            report.safety_record_id = _safety_backup(schema, record, actor, safety_record_id, on_safety)
        with open_backup_or_copy(record) as (backup, source_note):
            report.source_note = source_note
            if record.format == BackupRecord.Format.JSON:
                found = _replace_from_json(schema, record, backup, counts, live)
            else:
                found = _replace_from_script(schema, record, backup, counts, live)
            report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
        try:  # the files from the primary target (blobs are not copied to a second one)
            report.files = files_restore(record=record, storage=get_storage(record.storage_backend))
        except (BackupError, StorageError, OSError) as exc:
            _damaged(record, exc)
            raise RestoreFailed(f"Schema {schema} was replaced with backup {record.pk}, but its files were not all "
                                f"restored: {exc} Run the restore again to finish them.") from None
    except BackupError as exc:
        _damaged(record, exc)
        report.message = str(exc)
        backup_event_create(record=record, action=BackupEvent.Action.RESTORE, actor=actor,
                            details={"ok": False, "error": str(exc), "safety_record_id": report.safety_record_id})
        raise
    report.ok = True
    report.message = f"Schema {schema} replaced with backup {record.pk}."
    if report.files:
        report.message += " Files: {written} written, {kept} unchanged, {deleted} deleted.".format(**report.files)
    if report.source_note:
        report.message += " " + report.source_note
    backup_event_create(record=record, action=BackupEvent.Action.RESTORE, actor=actor,
                        details={"ok": True, "safety_record_id": report.safety_record_id,
                                 **({"source": "copy"} if report.source_note else {})})
    return report


def _replace_from_json(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int],
                       live: bool) -> dict[str, int | None]:
    """Django's transaction on its own connection: a dead worker's connection rolls it back like the script's."""
    aside = _aside_name(schema)
    with transaction.atomic():
        if live:
            with connection.cursor() as cur:
                cur.execute(f"ALTER SCHEMA {_q(schema)} RENAME TO {_q(aside)}")
        found = _load_json_into(schema, record, backup, counts)
        with connection.cursor() as cur:
            privileges.apply(cur, schema, record.manifest)
        require_counts(counts, found)
        if live:
            connection.ensure_connection()
            _refuse_dependents(connection.connection, aside, schema)
            with connection.cursor() as cur:
                cur.execute(f"DROP SCHEMA {_q(aside)} CASCADE")
    return found


class _Rollback(Exception):
    pass


def _verify_json(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int]) -> dict:
    scratch = f"tb_verify_{record.pk}_{secrets.token_hex(3)}"
    found: dict = {}
    try:
        with transaction.atomic():
            found.update(_load_json_into(scratch, record, backup, counts))
            raise _Rollback
    except _Rollback:
        pass
    return found


def _verify_script(schema: str, record: BackupRecord, backup: VerifiedBackup, counts: dict[str, int]) -> dict:
    """Load into a new scratch database holding what the tenant uses from other schemas, count, drop it.

    The database is locked by this process while it exists: if the process dies, the next clean-up drops it."""
    with scratch_database(record.pk) as dbname:
        return _verify_script_in(dbname, schema, record, backup, counts)


def _verify_script_in(dbname: str, schema: str, record: BackupRecord, backup: VerifiedBackup,
                      counts: dict[str, int]) -> dict:
    with pgtools.connect(autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {_q(dbname)} TEMPLATE template0 ENCODING 'UTF8'")
    try:
        prepare_scratch(dbname, schema)
        with pgtools.connect(dbname=dbname) as conn:
            privileges.require_roles(conn.cursor(), record.manifest)
            _loaded(conn, record, backup)
            privileges.apply(conn.cursor(), schema, record.manifest)
            found = table_counts(conn, schema, list(counts))
            conn.rollback()
    finally:
        with pgtools.connect(autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {_q(dbname)} WITH (FORCE)")
    return found


def restore_verify(*, schema: str, record: BackupRecord, actor: dict | None = None) -> RestoreReport:
    """Restore into a scratch database (json: a scratch schema, rolled back), compare row counts, drop it."""
    _checked_record(schema, record)
    counts = manifest_counts(record)
    report = RestoreReport(record.pk, schema, "verify", ok=False)
    try:
        with open_backup_or_copy(record) as (backup, source_note):
            report.source_note = source_note
            verify = _verify_json if record.format == BackupRecord.Format.JSON else _verify_script
            found = verify(schema, record, backup, counts)
            report.row_counts = {t: (n, found.get(t)) for t, n in counts.items()}
    except BackupError as exc:
        _damaged(record, exc)
        report.message = str(exc)
    else:
        report.ok = not report.mismatches
        report.message = ("Row counts match the manifest." if report.ok
                          else f"Row counts differ from the manifest: {report.mismatches}")
        checked, problems = files_verify(record=record, storage=get_storage(record.storage_backend))
        if checked or problems:
            report.files = {"checked": checked, "problems": problems[:20]}
            if problems:
                report.ok = False
                report.message += f" {len(problems)} of {checked} files failed their check: {problems[0]}"
            else:
                report.message += f" All {checked} files match their SHA-256."
        if report.source_note:
            report.message += " " + report.source_note
    backup_event_create(record=record, action=BackupEvent.Action.VERIFY, actor=actor,
                        details={"ok": report.ok, "message": report.message[:500]})
    return report
