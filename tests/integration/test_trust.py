"""The storage is not trusted: nothing read from it runs before its digest matched the catalog's.

Each test reproduces one hole of the trust issue: a shell command planted in a stored dump, a tampered
manifest turned into a "succeeded" backup, a JSON backup that writes into the public schema, a backup
whose checksum fails staying on offer, and tenants whose table names need quoting.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_domain_model

from backups import conf
from backups.backup.run import backup_run
from backups.catalog.finalize import backup_record_delete
from backups.catalog.manifest import manifest_key, sign_manifest
from backups.catalog.records import backup_record_create
from backups.core.errors import RestoreFailed
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupEvent, BackupRecord
from backups.restore.drills import drill_candidates
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage

SCHEMA = "clinica_sonrisa"


def _path(record: BackupRecord) -> Path:
    return Path(conf.local_root()) / record.storage_key


def _trust(record: BackupRecord, data: bytes) -> None:
    """Make the catalog believe `data` (as if it had been fooled too): the digest no longer protects."""
    BackupRecord.objects.filter(pk=record.pk).update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    record.refresh_from_db()


@pytest.fixture
def plain_sql(tmp_path):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql", compression="none").pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    marker = tmp_path / "marker.txt"
    yield record, marker
    get_storage().delete(record.storage_key)
    get_storage().delete(manifest_key(record.storage_key))
    BackupRecord.objects.filter(pk=record.pk).delete()


def test_a_planted_shell_command_never_runs_and_the_backup_is_marked_damaged(plain_sql, settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    record, marker = plain_sql
    mail.outbox.clear()
    path = _path(record)
    path.write_bytes(f"\\! id > {marker}\n".encode() + path.read_bytes())
    report = restore_verify(schema=SCHEMA, record=record)
    assert not report.ok and "tampered with" in report.message
    with pytest.raises(RestoreFailed):
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert not marker.exists()  # the command was never handed to psql
    record.refresh_from_db()
    assert record.damaged_at is not None and record.status == BackupRecord.Status.SUCCEEDED
    assert not BackupRecord.objects.restorable().filter(pk=record.pk).exists()
    assert any("is damaged" in m.subject for m in mail.outbox)
    assert BackupEvent.objects.filter(record=record, action="fail", details__damaged=True).count() == 1


@pytest.mark.parametrize("planted", [
    "\\! id > {marker}\n",
    "SELECT 1; \\! id > {marker}\n",
    "\\o |id > {marker}\n",
    "\\copy (select 1) to program 'id > {marker}'\n",
    "SET standard_conforming_strings = off;\nSELECT 'a\\'; \\! id > {marker}\n",
    "SELECT pg_catalog.set_config('standard_conforming_strings', 'off', false);\nSELECT 'a\\'; \\! id > {marker}\n",
])
def test_psql_meta_commands_refuse_the_restore_even_with_a_matching_digest(plain_sql, planted):
    record, marker = plain_sql
    path = _path(record)
    data = planted.format(marker=marker).encode() + path.read_bytes()
    path.write_bytes(data)
    _trust(record, data)
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {SCHEMA}.clinic_patient")
        before = cur.fetchone()[0]
    with pytest.raises(RestoreFailed, match="SQL was refused"):
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    report = restore_verify(schema=SCHEMA, record=record)
    assert not report.ok and "SQL was refused" in report.message
    assert not marker.exists()
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {SCHEMA}.clinic_patient")
        assert cur.fetchone()[0] == before


def test_a_carriage_return_inside_an_e_string_is_data_not_a_line_end(plain_sql):
    """psql ended the line at the CR and ran what followed as a meta-command; the loader has no meta-commands."""
    record, marker = plain_sql
    path = _path(record)
    data = f"SELECT E'a\r\\! id > {marker}' AS harmless;\n".encode() + path.read_bytes()
    path.write_bytes(data)
    _trust(record, data)
    report = restore_verify(schema=SCHEMA, record=record)
    assert report.ok, report.message
    assert not marker.exists()


def test_a_record_without_a_digest_is_never_restored_or_drilled(plain_sql):
    record, _ = plain_sql
    BackupRecord.objects.filter(pk=record.pk).update(sha256="")
    record.refresh_from_db()
    with pytest.raises(RestoreFailed, match="no recorded SHA-256"):
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert record.pk not in {rid for *_, rid in drill_candidates(sample=100)}


def _tampered_manifest_setup(record: BackupRecord, marker: Path, **edits) -> dict:
    storage = get_storage()
    path = _path(record)
    path.write_bytes(f"\\! id > {marker}\n".encode() + path.read_bytes())
    manifest = json.loads(storage.get_bytes(manifest_key(record.storage_key)))
    manifest.update(size=path.stat().st_size, **edits)
    BackupRecord.objects.filter(pk=record.pk).delete()
    return manifest


def test_reconcile_never_imports_a_tampered_manifest(plain_sql, settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    record, marker = plain_sql
    storage = get_storage()
    manifest = _tampered_manifest_setup(record, marker, sha256="", finished_at="2030-01-01T00:00:00+00:00",
                                        backup_type="automatic")
    storage.delete(manifest_key(record.storage_key))
    storage.put_bytes(manifest_key(record.storage_key), json.dumps(manifest).encode())  # signature now wrong
    mail.outbox.clear()
    out = StringIO()
    call_command("reconcile_backups", SCHEMA, stdout=out)
    assert not BackupRecord.objects.filter(storage_key=record.storage_key).exists()
    assert "not signed" in out.getvalue() and "1 refused" in out.getvalue()
    assert any("refused by reconcile" in m.subject for m in mail.outbox)
    assert not marker.exists()


@pytest.mark.parametrize(("edits", "why"), [
    ({"sha256": ""}, "no SHA-256"),
    ({"finished_at": (timezone.now() + timedelta(days=30)).isoformat()}, "in the future"),
    ({"tenant_uid": "00000000-0000-0000-0000-000000000001"}, "another schema, identity or file"),
])
def test_reconcile_refuses_even_a_signed_manifest_that_does_not_hold_up(plain_sql, edits, why):
    record, marker = plain_sql
    manifest = _tampered_manifest_setup(record, marker, **edits)
    manifest.pop("signature", None)
    get_storage().delete(manifest_key(record.storage_key))
    get_storage().put_bytes(manifest_key(record.storage_key), json.dumps(sign_manifest(manifest)).encode())
    result = storage_reconcile(schemas=[SCHEMA])
    assert why in result.rejected[record.storage_key]
    assert result.imported == [] and not BackupRecord.objects.filter(storage_key=record.storage_key).exists()


def test_a_json_restore_refuses_a_model_of_the_shared_apps_before_writing(tmp_path):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="json", compression="none").pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    Domain = get_tenant_domain_model()
    domains = Domain.objects.count()
    try:
        path = _path(record)
        line = {"model": "tenants.domain", "pk": 999999, "fields": {"domain": "evil.example", "tenant": 1,
                                                                      "is_primary": False}}
        data = path.read_bytes() + json.dumps(line).encode() + b"\n"
        path.write_bytes(data)
        _trust(record, data)
        with pytest.raises(RestoreFailed, match="not a model of the tenant's own apps"):
            restore_replace(schema=SCHEMA, record=record, safety_backup=False)
        report = restore_verify(schema=SCHEMA, record=record)
        assert not report.ok and "not a model of the tenant's own apps" in report.message
        assert Domain.objects.count() == domains and not Domain.objects.filter(domain="evil.example").exists()
    finally:
        get_storage().delete(record.storage_key)
        get_storage().delete(manifest_key(record.storage_key))
        BackupRecord.objects.filter(pk=record.pk).delete()


QUOTED_TABLES = {'"Order Lines"': 3, '"select"': 2, '"MixedCase"': 1, '"Ñandú señal"': 4}


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_tables_whose_names_need_quoting_restore_and_verify(fake_tenants, fmt):
    (tenant,) = fake_tenants(f"quoted_{fmt}_", 1, due_at=None)
    schema = tenant.schema_name
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE {schema}.django_migrations")
        cur.execute(f"CREATE TABLE {schema}.django_migrations (id serial PRIMARY KEY, app varchar(255), "
                    "name varchar(255), applied timestamptz)")
        for table, rows in QUOTED_TABLES.items():
            cur.execute(f'CREATE TABLE {schema}.{table} (id int, "Wert ü" text)')
            cur.execute(f"INSERT INTO {schema}.{table} SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    record = backup_run(record_id=backup_record_create(schema_name=schema, tenant=tenant, fmt=fmt).pk)
    try:
        assert record.status == BackupRecord.Status.SUCCEEDED, record.error
        assert record.manifest["row_counts"]["Order Lines"] == 3
        report = restore_verify(schema=schema, record=record)
        assert report.ok, report.message
        replaced = restore_replace(schema=schema, record=record, safety_backup=False)
        assert replaced.ok and replaced.row_counts["Ñandú señal"] == (4, 4)
        with connection.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM {schema}."Order Lines"')
            assert cur.fetchone()[0] == 3
    finally:
        get_storage().delete(record.storage_key)
        get_storage().delete(manifest_key(record.storage_key))
        BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid).delete()


def test_deleting_a_failed_record_leaves_an_object_that_is_not_its_own():
    record = backup_record_create(schema_name=SCHEMA, fmt="sql")
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.FAILED)
    record.refresh_from_db()
    storage = get_storage()
    storage.put_bytes(record.storage_key, b"an object of nobody, at this failed record's key")
    try:
        backup_record_delete(record=record, actor={"retention": True}, action=BackupEvent.Action.RETENTION)
        assert not BackupRecord.objects.filter(pk=record.pk).exists()
        assert storage.stat(record.storage_key) is not None  # not the record's to delete
    finally:
        storage.delete(record.storage_key)


def test_editing_a_tenant_outside_its_schedule_keeps_its_due_slot(fake_tenants):
    due = timezone.now() - timedelta(minutes=5)
    (tenant,) = fake_tenants("edit_", 1, due_at=due)
    tenant.refresh_from_db()
    tenant.nombre = "A new name"
    tenant.save()
    tenant.refresh_from_db()
    assert tenant.next_backup_at == due  # still due: the dispatcher will take it
    tenant.backup_time = tenant.backup_time.replace(hour=(tenant.backup_time.hour + 1) % 24)
    tenant.save()
    tenant.refresh_from_db()
    assert tenant.next_backup_at > timezone.now()  # a schedule change does recompute


def test_objects_stored_before_identities_move_under_the_identity_prefix(plain_sql):
    record, _ = plain_sql
    storage = get_storage()
    legacy = f"{SCHEMA}/{record.file_name}"
    data = storage.get_bytes(record.storage_key)
    storage.put_bytes(legacy, data)
    storage.put_bytes(manifest_key(legacy), b'{"schema": "clinica_sonrisa"}')  # an old, unsigned manifest
    storage.delete(record.storage_key)
    storage.delete(manifest_key(record.storage_key))
    new_key = record.storage_key
    BackupRecord.objects.filter(pk=record.pk).update(storage_key=legacy)
    out = StringIO()
    call_command("migrate_backup_keys", stdout=out)
    record.refresh_from_db()
    assert record.storage_key == new_key and "1 were moved, 0 failed" in out.getvalue()
    assert storage.get_bytes(new_key) == data and storage.stat(legacy) is None
    moved = json.loads(storage.get_bytes(manifest_key(new_key)))
    assert moved["tenant_uid"] == str(record.tenant_uid) and "signature" in moved
    assert restore_verify(schema=SCHEMA, record=record).ok
    call_command("migrate_backup_keys", stdout=StringIO())  # nothing left to move, nothing breaks
    assert storage.get_bytes(new_key) == data


def test_a_damaged_newest_backup_stops_retention_and_a_deleted_tenants_backups_expire(fake_tenants, settings):
    from backups.catalog.finalize import deleted_tenant_backups_purge, retention_apply

    (tenant,) = fake_tenants("ret_", 1, due_at=None)
    Tenant = type(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(backup_keep_daily=1, backup_keep_weekly=0, backup_keep_monthly=0)
    base = timezone.now() - timedelta(days=5)
    made = []
    for day in range(3):
        at = base + timedelta(days=day)
        record = backup_record_create(schema_name=tenant.schema_name, tenant=tenant, backup_type="automatic",
                                      at=at, slot=at)
        BackupRecord.objects.filter(pk=record.pk).update(status="succeeded", created_at=at, finished_at=at,
                                                         sha256="0" * 64, size=1)
        made.append(record.pk)
    BackupRecord.objects.filter(pk=made[-1]).update(damaged_at=timezone.now())
    assert retention_apply(tenant_id=tenant.pk) == []  # the newest is damaged: nothing is deleted
    Tenant.objects.filter(pk=tenant.pk).delete()
    settings.BACKUPS_DELETED_TENANT_KEEP_DAYS = 30
    assert deleted_tenant_backups_purge() == []  # deleted just now: kept for operators
    assert sorted(deleted_tenant_backups_purge(now=timezone.now() + timedelta(days=31))) == made
    assert not BackupRecord.objects.filter(pk__in=made).exists()
