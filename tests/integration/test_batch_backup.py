"""Batched dumps: one pg_dump for many tenants, one artifact each that restores exactly like a single backup."""

from __future__ import annotations

import subprocess
from datetime import time, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.batch import run as batch_backup
from backups.backup.batch import split as batch_split
from backups.backup.batch.run import batch_backup_run, batch_check
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import BackupConfigError
from backups.core.naming import tenant_prefix
from backups.models import BackupEvent, BackupRecord
from backups.ops.checks import check_configuration
from backups.postgres.locks import RECORD_NAMESPACE, TENANT_NAMESPACE, lock_key
from backups.postgres.pgtools import connect
from backups.restore.run import restore_replace, restore_verify
from backups.schedule.dispatch import dispatch_due_backups
from backups.storage import get_storage
from backups.storage.reading import open_backup

from .conftest import DEMO_SCHEMAS, wait_for_record
from .helpers import schema_tables, table_fingerprints


def _tenant(schema: str):
    return get_tenant_model().objects.get(schema_name=schema)


def _records(fmt: str, schemas=DEMO_SCHEMAS, **kwargs) -> list[BackupRecord]:
    return [backup_record_create(schema_name=s, tenant=_tenant(s), fmt=fmt, **kwargs) for s in schemas]


@pytest.fixture
def spool(tmp_path, settings) -> Path:
    settings.BACKUPS_SPOOL_DIR = str(tmp_path)
    return tmp_path


def _spool_left(spool: Path) -> list[Path]:
    return list(spool.glob("tenant-backups-batch-*"))


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_batch_made_and_single_made_backups_restore_to_the_same_tables(fmt, spool):
    before = {s: table_fingerprints(s) for s in DEMO_SCHEMAS}
    single = {r.schema_name: backup_run(record_id=r.pk) for r in _records(fmt)}
    batch = _records(fmt)
    result = batch_backup_run(record_ids=[r.pk for r in batch])
    assert result.dumped == len(DEMO_SCHEMAS) and not result.alone
    assert sorted(result.succeeded) == sorted(r.pk for r in batch)
    assert _spool_left(spool) == []
    for made in batch:
        made.refresh_from_db()
        alone = single[made.schema_name]
        assert made.status == alone.status == BackupRecord.Status.SUCCEEDED, made.error
        # named and stored as today, under the tenant's identity
        assert made.storage_key.startswith(tenant_prefix(made.schema_name, made.tenant_uid))
        assert made.file_name.startswith(f"backup-{fmt}-{made.schema_name}-")
        assert made.sha256 and made.size and made.manifest["sha256"] == made.sha256
        assert made.manifest["row_counts"] == alone.manifest["row_counts"]
        assert made.manifest["migrations"] == alone.manifest["migrations"]
        assert made.manifest["tenant_uid"] == str(made.tenant_uid) and made.manifest["record_id"] == made.pk
        assert made.manifest["row_counts"]["clinic_patient"] == 1200
        report = restore_verify(schema=made.schema_name, record=made)
        assert report.ok and not report.mismatches, report.message
    for made in batch:
        schema = made.schema_name
        tables = schema_tables(schema)
        assert restore_replace(schema=schema, record=made, safety_backup=False).ok
        from_batch = table_fingerprints(schema, tables)
        assert restore_replace(schema=schema, record=single[schema], safety_backup=False).ok
        assert table_fingerprints(schema, tables) == from_batch == before[schema]


def test_a_member_whose_schema_is_missing_fails_alone(spool):
    gone = backup_record_create(schema_name="batch_gone_schema", fmt="sql")
    others = _records("sql", DEMO_SCHEMAS[:2])
    result = batch_backup_run(record_ids=[gone.pk, *[r.pk for r in others]])
    gone.refresh_from_db()
    assert gone.status == BackupRecord.Status.FAILED and "does not exist" in gone.error
    assert result.failed == [gone.pk] and result.dumped == 2
    assert all(BackupRecord.objects.get(pk=r.pk).status == BackupRecord.Status.SUCCEEDED for r in others)


def test_when_the_batch_cannot_be_split_every_member_runs_alone(spool, monkeypatch):
    class Unsplittable(batch_split.BatchArchive):
        def members(self, schemas):
            raise batch_split.SplitError("an entry that belongs to no member")

    monkeypatch.setattr(batch_backup, "BatchArchive", Unsplittable)
    records = _records("dump", DEMO_SCHEMAS[:2])
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert sorted(result.alone) == sorted(r.pk for r in records)
    assert sorted(result.succeeded) == sorted(r.pk for r in records)
    for record in records:
        record.refresh_from_db()
        assert record.status == BackupRecord.Status.SUCCEEDED and record.manifest["dump_tool"] == "pg_dump"
        assert record.attempts == 2  # the batch's try, then its own
    assert _spool_left(spool) == []


def test_a_failing_member_upload_fails_alone(spool, monkeypatch):
    records = _records("sql", DEMO_SCHEMAS)
    victim = records[1]
    real = batch_backup._write_member

    def write(record, *args):
        if record.pk == victim.pk:
            raise OSError(28, "No space left on device")
        return real(record, *args)

    monkeypatch.setattr(batch_backup, "_write_member", write)
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert result.failed == [victim.pk] and len(result.succeeded) == 2
    victim.refresh_from_db()
    assert victim.status == BackupRecord.Status.FAILED and "No space left" in victim.error


def test_members_finished_or_held_elsewhere_are_skipped_and_busy_tenants_retried_alone(spool):
    done, held, busy, free = _records("sql", [*DEMO_SCHEMAS, DEMO_SCHEMAS[0]])[:4]
    done = backup_run(record_id=done.pk)
    with connect(autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(RECORD_NAMESPACE, held.pk),))
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(TENANT_NAMESPACE, busy.schema_name),))
        result = batch_backup_run(record_ids=[done.pk, held.pk, busy.pk, free.pk])
    assert done.pk in result.skipped and held.pk in result.skipped
    assert result.retry == [busy.pk] and result.succeeded == [free.pk]
    assert BackupRecord.objects.get(pk=held.pk).status == BackupRecord.Status.QUEUED
    assert BackupRecord.objects.get(pk=busy.pk).status == BackupRecord.Status.QUEUED
    assert backup_run(record_id=busy.pk).status == BackupRecord.Status.SUCCEEDED
    assert backup_run(record_id=held.pk).status == BackupRecord.Status.SUCCEEDED  # nothing left queued behind


def test_batches_are_cut_to_fit_the_servers_lock_table(spool, settings):
    budget = batch_backup.lock_budget()
    with connect(autocommit=True) as conn:
        tables = max(t for t, _ in batch_backup._schema_sizes(conn, list(DEMO_SCHEMAS)).values())
    # room for two demo tenants per batch: three members make a batch of two and one run alone
    settings.BACKUPS_MAX_CONCURRENT_DUMPS = 1
    settings.BACKUPS_BATCH_LOCK_SHARE = (2 * batch_backup.locks_per_member(tables) + 1) / budget.table
    records = _records("sql")
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert result.dumped == 2 and len(result.alone) == 1
    assert sorted(result.succeeded) == sorted(r.pk for r in records)


def test_start_up_check_names_the_setting_when_batches_cannot_fit(settings):
    assert "lock slots" in batch_check()
    settings.BACKUPS_BATCH_LOCK_SHARE = 0.0001
    with pytest.raises(BackupConfigError, match="max_locks_per_transaction"):
        check_configuration()
    settings.BACKUPS_BATCH_SIZE = 1  # batching off: nothing to fit
    check_configuration()


def test_start_up_check_refuses_a_spool_without_room(settings, tmp_path):
    settings.BACKUPS_SPOOL_DIR = str(tmp_path)
    settings.BACKUPS_BATCH_MAX_SPOOL_BYTES = 1 << 60
    with pytest.raises(BackupConfigError, match="BACKUPS_BATCH_MAX_SPOOL_BYTES"):
        batch_check()


def _make_due(schemas) -> None:
    get_tenant_model().objects.filter(schema_name__in=schemas).update(
        backup_schedule="daily", backup_time=time(3, 0), backup_timezone="UTC",
        next_backup_at=timezone.now() - timedelta(minutes=1))


@pytest.fixture
def due_demo_tenants(settings):
    settings.BACKUPS_SPREAD_SECONDS = 0
    Tenant = get_tenant_model()
    saved = list(Tenant.objects.filter(schema_name__in=DEMO_SCHEMAS).values_list(
        "pk", "backup_schedule", "backup_time", "backup_timezone", "next_backup_at", "last_backup_at"))
    _make_due(DEMO_SCHEMAS)
    yield
    for pk, schedule, at, zone, next_at, last_at in saved:
        Tenant.objects.filter(pk=pk).update(backup_schedule=schedule, backup_time=at, backup_timezone=zone,
                                            next_backup_at=next_at, last_backup_at=last_at)


def test_the_dispatcher_tick_sends_one_batch_that_real_workers_run(due_demo_tenants, celery_worker):
    dispatch = dispatch_due_backups()
    ours = [r for r in dispatch.records if r.schema_name in DEMO_SCHEMAS]
    assert len(ours) == len(DEMO_SCHEMAS)
    for record in ours:
        done = wait_for_record(record.pk, timeout=120)
        assert done.status == BackupRecord.Status.SUCCEEDED, done.error
        assert done.task_id  # run by the worker's batch task
    # the batch did the chain's later links too
    assert not get_tenant_model().objects.filter(schema_name__in=DEMO_SCHEMAS, last_backup_at__isnull=True).exists()
    with connection.cursor() as cur:
        cur.execute("SELECT count(DISTINCT task_id) FROM backups_backuprecord WHERE id = ANY(%s)",
                    ([r.pk for r in ours],))
        assert cur.fetchone()[0] == 1


def test_the_cron_path_batches_too(due_demo_tenants):
    out = StringIO()
    call_command("run_scheduled_backups", stdout=out)
    text = out.getvalue()
    assert f"Backing up {len(DEMO_SCHEMAS)} tenants in 1 batch(es), 1 at a time" in text
    assert f"{len(DEMO_SCHEMAS)} of {len(DEMO_SCHEMAS)} scheduled backups done." in text
    for schema in DEMO_SCHEMAS:
        tenant = _tenant(schema)
        assert f"{tenant}: Uploaded {tenant_prefix(schema, tenant.tenant_uid)}auto-sql-{schema}-" in text


def test_a_cron_pass_drains_everything_due_whatever_one_claim_takes(due_demo_tenants, settings):
    """An hourly cron that stopped at BACKUPS_DISPATCH_BATCH would leave the rest of the fleet an hour late."""
    settings.BACKUPS_DISPATCH_BATCH = 1
    out = StringIO()
    call_command("run_scheduled_backups", stdout=out)
    assert f"{len(DEMO_SCHEMAS)} of {len(DEMO_SCHEMAS)} scheduled backups done." in out.getvalue()
    assert not get_tenant_model().objects.filter(schema_name__in=DEMO_SCHEMAS, last_backup_at__isnull=True).exists()


def test_a_cron_pass_runs_its_batches_side_by_side_on_the_dump_slots(due_demo_tenants, settings):
    """The workers' rule: batches sized for the dump slots, each slot busy at once (not one batch after another)."""
    settings.BACKUPS_MAX_CONCURRENT_DUMPS = 2
    settings.BACKUPS_BATCH_MIN_SIZE = 1
    settings.BACKUPS_BATCH_SIZE = 2
    since = BackupRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    out = StringIO()
    call_command("run_scheduled_backups", stdout=out)
    assert f"Backing up {len(DEMO_SCHEMAS)} tenants in 2 batch(es), 2 at a time" in out.getvalue()
    made = list(BackupRecord.objects.filter(pk__gt=since, schema_name__in=DEMO_SCHEMAS).order_by("pk"))
    assert [r.status for r in made] == [BackupRecord.Status.SUCCEEDED] * len(DEMO_SCHEMAS)
    first, second = made[:2], made[2:]  # the batches, in claim order
    assert max(r.started_at for r in second) < min(r.finished_at for r in first), \
        "the second batch started only after the first had finished"


# ----------------------------------------------------------------------------- sql written from the archive

FEATURE_SCHEMA = "batch_sql_features"
FEATURE_SQL = r'''
DROP SCHEMA IF EXISTS SCHEMA_X CASCADE;
CREATE SCHEMA SCHEMA_X;
COMMENT ON SCHEMA SCHEMA_X IS 'a schema''s comment';
SET search_path = SCHEMA_X;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 200);
CREATE TABLE "Odd Table" (
    id serial PRIMARY KEY,
    m mood NOT NULL DEFAULT 'ok',
    note short_text,
    "Weird ""Col" text CHECK ("Weird ""Col" <> 'x'),
    created timestamptz DEFAULT now()
);
COMMENT ON TABLE "Odd Table" IS 'comment with ''quotes'' and
a line break';
COMMENT ON COLUMN "Odd Table".note IS 'the note';
CREATE TABLE child (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, parent int REFERENCES "Odd Table"(id),
                    payload jsonb, tags text[]);
CREATE UNIQUE INDEX child_payload_idx ON child ((payload->>'k')) WHERE payload IS NOT NULL;
CREATE TABLE empty_one (a int);
CREATE SEQUENCE free_seq START 7;
SELECT nextval('free_seq');
CREATE VIEW odd_view AS SELECT id, m FROM "Odd Table" WHERE m <> 'sad';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN NEW.note := coalesce(NEW.note, E'tab\there'); RETURN NEW; END $body$;
CREATE TRIGGER odd_touch BEFORE INSERT ON "Odd Table" FOR EACH ROW EXECUTE FUNCTION touch();
INSERT INTO "Odd Table" (m, note, "Weird ""Col") VALUES
    ('happy', E'line\nbreak, tab\t, backslash \\ and ünïcödé', 'y'), ('sad', NULL, NULL), ('ok', '', 'z');
INSERT INTO child (parent, payload, tags) VALUES (1, '{"k": "v", "n": [1, 2]}', ARRAY['a b', 'c"d']),
    (2, NULL, '{}');
'''.replace("SCHEMA_X", FEATURE_SCHEMA)


@pytest.fixture
def feature_schema():
    with connection.cursor() as cur:
        cur.execute(FEATURE_SQL)
    yield FEATURE_SCHEMA
    with connection.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {FEATURE_SCHEMA} CASCADE")


def _batch_archive(tmp_path: Path, schemas: list[str]) -> batch_split.BatchArchive:
    from backups.postgres import pgtools

    target = tmp_path / "batch.dump"
    bins = pgtools.binaries()
    subprocess.run([bins.pg_dump, "--format=custom", "--compress=0", "--no-owner", "--no-acl", "--strict-names",
                    f"--file={target}", *[f"--schema={s}" for s in schemas]], check=True, env=pgtools.libpq_env())
    return batch_split.BatchArchive(target)


def _pg_restore_sql(archive: batch_split.BatchArchive, part, key: str) -> bytes:
    from backups.postgres import pgtools

    custom = bytearray()
    archive.write_custom(part, custom.extend)
    return subprocess.run([pgtools.binaries().pg_restore, "--no-owner", "--no-acl", f"--restrict-key={key}", "-f", "-"],
                          input=bytes(custom), capture_output=True, check=True).stdout


def test_sql_written_from_the_archive_is_pg_restores_byte_for_byte(tmp_path, feature_schema):
    schemas = [*DEMO_SCHEMAS, feature_schema]
    archive = _batch_archive(tmp_path, schemas)
    parts = archive.members(schemas)
    kinds = set()
    for schema in schemas:
        features = archive.sql_features(parts[schema])
        assert features is not None, schema
        kinds |= features
        key = batch_split.restrict_key()
        ours = bytearray()
        archive.write_sql(parts[schema], ours.extend, restrict_key=key, read_size=4096)
        assert bytes(ours) == _pg_restore_sql(archive, parts[schema], key), schema
    # the feature schema exercised the kinds a tenant schema may hold beyond Django's tables
    assert {"TYPE", "DOMAIN", "VIEW", "FUNCTION", "TRIGGER", "COMMENT", "DEFAULT",
            "SEQUENCE OWNED BY", "INDEX", "FK CONSTRAINT", "SEQUENCE SET", "TABLE DATA"} <= kinds


def test_an_archive_written_to_a_pipe_is_refused(tmp_path):
    from backups.postgres import pgtools

    # piped, pg_dump cannot go back to write the data offsets: the splitter says so and the batch runs alone
    piped = subprocess.run([pgtools.binaries().pg_dump, "--format=custom", "--compress=0", "--no-owner", "--no-acl",
                            f"--schema={DEMO_SCHEMAS[0]}"], check=True, capture_output=True,
                           env=pgtools.libpq_env()).stdout
    (tmp_path / "piped.dump").write_bytes(piped)
    with pytest.raises(batch_split.SplitUnsupported, match="no offset"):
        batch_split.BatchArchive(tmp_path / "piped.dump")


@pytest.mark.parametrize("damage", ["chunk sign", "block header"])
def test_a_damaged_data_block_fails_the_split(tmp_path, damage):
    schemas = list(DEMO_SCHEMAS)
    archive = _batch_archive(tmp_path, schemas)
    part = archive.members(schemas)[schemas[0]]
    entry = next(e for e in part.data_entries if e.tag == "django_migrations")
    at = entry.data_offset + (1 + 1 + archive.int_size if damage == "chunk sign" else 0)
    with open(archive.path, "r+b") as f:
        f.seek(at)
        f.write(b"\x01" if damage == "chunk sign" else b"\x09")
    # every member's blocks are parsed whole for its row counts before its artifact is written (batch_backup._member)
    with pytest.raises(batch_split.SplitError, match="django_migrations"):
        archive.row_counts(part)
    if damage == "block header":  # the copy checks each block's header and end itself
        with pytest.raises(batch_split.SplitError, match="django_migrations"):
            archive.write_custom(part, lambda _: None)


def test_restrict_keys_are_random_and_each_members_own():
    keys = {batch_split.restrict_key() for _ in range(50)}
    assert len(keys) == 50 and all(len(k) == 63 and k.isalnum() and k.isascii() for k in keys)


def test_a_schema_with_a_materialized_view_goes_through_pg_restore(tmp_path, feature_schema):
    with connection.cursor() as cur:
        cur.execute(f'CREATE MATERIALIZED VIEW {feature_schema}.mv AS SELECT count(*) AS n '
                    f'FROM {feature_schema}."Odd Table"')
    archive = _batch_archive(tmp_path, [feature_schema])
    assert archive.sql_features(archive.members([feature_schema])[feature_schema]) is None


def _stored_sql(record: BackupRecord) -> bytes:
    with open_backup(get_storage(record.storage_backend), record) as backup:
        return backup.plain().read()


def test_batch_sql_backups_are_checked_against_pg_restore_and_each_has_its_own_key(spool, monkeypatch,
                                                                                   feature_schema):
    calls = []
    real = batch_backup._restore_to_sql

    def counting(*args, **kwargs):
        calls.append(args[1].schema)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_backup, "_restore_to_sql", counting)
    Tenant = get_tenant_model()
    records = [*_records("sql"), backup_record_create(schema_name=feature_schema, fmt="sql")]
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert sorted(result.succeeded) == sorted(r.pk for r in records) and result.dumped == len(records)
    # pg_restore ran for the first demo tenant and for the schema with new kinds of entries, not for the others
    assert calls == [DEMO_SCHEMAS[0], feature_schema]
    keys = set()
    for record in records:
        record.refresh_from_db()
        sql = _stored_sql(record)
        first = next(line for line in sql.splitlines() if line.startswith(b"\\restrict "))
        key = first.removeprefix(b"\\restrict ")
        assert sql.endswith(b"\\unrestrict " + key + b"\n\n")
        keys.add(key)
        if record.schema_name in DEMO_SCHEMAS:
            assert Tenant.objects.get(schema_name=record.schema_name).last_backup_at == record.finished_at
    assert len(keys) == len(records)


def test_when_the_archives_sql_disagrees_with_pg_restore_the_batch_uses_pg_restore(spool, monkeypatch, caplog):
    real_write = batch_split.BatchArchive.write_sql

    def wrong(self, part, write, **kwargs):
        real_write(self, part, write, **kwargs)
        write(b"-- not what pg_restore writes\n")

    monkeypatch.setattr(batch_split.BatchArchive, "write_sql", wrong)
    calls = []
    real = batch_backup._restore_to_sql
    monkeypatch.setattr(batch_backup, "_restore_to_sql", lambda *a, **k: calls.append(a[1].schema) or real(*a, **k))
    records = _records("sql")
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert sorted(result.succeeded) == sorted(r.pk for r in records)
    assert calls == list(DEMO_SCHEMAS)  # the first one checked and disagreed: every member through pg_restore
    assert "differs from pg_restore's" in caplog.text
    for record in records:
        record.refresh_from_db()
        assert b"not what pg_restore writes" not in _stored_sql(record)
        assert restore_verify(schema=record.schema_name, record=record).ok


# ----------------------------------------------------------------------------- records, in groups


def _state(record: BackupRecord) -> dict:
    record.refresh_from_db()
    manifest = {k: v for k, v in record.manifest.items()
                if k not in ("record_id", "created_at", "file_name", "storage_key", "sha256", "size", "signature",
                             "plain_sha256", "plain_size", "finished_at", "started_at")}
    if "files" in manifest:  # when they were listed, and what the first of the two stored that the second reused
        manifest["files"] = {k: v for k, v in manifest["files"].items()
                             if k not in ("listed_at", "new_blobs", "new_bytes")}
    return {"status": record.status, "stage": record.stage, "error": record.error, "attempts": record.attempts,
            "bytes_done_is_plain_size": record.bytes_done == record.plain_size, "has_started": bool(record.started_at),
            "has_finished": bool(record.finished_at), "size": bool(record.size), "sha256": len(record.sha256),
            "events": sorted(e.action for e in record.events.all()),
            "event_tenant": {e.tenant_id for e in record.events.all()}, "manifest_keys": sorted(record.manifest),
            "manifest": manifest}


def test_batch_records_end_like_single_ones(spool):
    single = [backup_run(record_id=r.pk) for r in _records("dump")]
    batch = _records("dump")
    batch_backup_run(record_ids=[r.pk for r in batch])
    for alone, made in zip(single, batch, strict=True):
        assert _state(made) == _state(alone)
        assert made.manifest["record_id"] == made.pk


def test_batch_retention_deletes_what_retention_apply_deletes(spool, monkeypatch, settings):
    import backups.catalog.finalize as finalize

    settings.BACKUPS_MANUAL_RETENTION_DAYS = 30
    tenant = _tenant(DEMO_SCHEMAS[0])
    # a newer good backup first: retention never deletes a tenant's newest one, which the 40-day one would be in a
    # database where no earlier test backed this tenant up
    backup_run(record_id=backup_record_create(schema_name=tenant.schema_name, tenant=tenant, fmt="dump",
                                              backup_type=BackupRecord.Type.MANUAL).pk)
    old = []
    for days in (40, 41, 42):
        record = backup_run(record_id=backup_record_create(
            schema_name=tenant.schema_name, tenant=tenant, fmt="dump", backup_type=BackupRecord.Type.MANUAL).pk)
        BackupRecord.objects.filter(pk=record.pk).update(created_at=timezone.now() - timedelta(days=days))
        old.append(record.pk)
    names = list(BackupRecord.objects.filter(pk__in=old).values_list("file_name", flat=True))
    keys = list(BackupRecord.objects.filter(pk__in=old).values_list("storage_key", flat=True))
    with monkeypatch.context() as m:  # what the single path would delete, without deleting
        m.setattr(finalize, "backup_record_delete", lambda **kw: None)
        # (other tests' old backups of this tenant may be due too: the suite shares one database)
        assert set(old) <= set(finalize.retention_apply(tenant_id=tenant.pk))
    records = _records("dump", DEMO_SCHEMAS[:2], backup_type=BackupRecord.Type.AUTOMATIC)
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert sorted(result.succeeded) == sorted(r.pk for r in records)
    assert not BackupRecord.objects.filter(pk__in=old).exists()
    assert all(BackupRecord.objects.get(pk=r.pk).status == BackupRecord.Status.SUCCEEDED for r in records)
    assert BackupEvent.objects.filter(action=BackupEvent.Action.RETENTION, details__file_name__in=names,
                                      actor={"retention": True}).count() == 3
    assert not any(get_storage().stat(key) for key in keys)


def test_succeeded_members_are_recorded_in_groups(spool, monkeypatch):
    from backups.catalog import records as batch_records

    monkeypatch.setattr(batch_backup, "RECORD_GROUP", 2)
    groups = []
    real = batch_records.backup_records_mark_succeeded

    def spy(*, successes):
        groups.append(len(successes))
        return real(successes=successes)

    monkeypatch.setattr(batch_backup, "backup_records_mark_succeeded", spy)
    records = _records("dump")
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert sorted(result.succeeded) == sorted(r.pk for r in records)
    assert groups == [2, 1]
