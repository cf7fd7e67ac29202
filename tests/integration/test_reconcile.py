"""Catalog and storage kept in agreement: gone objects fail their record, records are rebuilt from manifests."""

from io import StringIO

import pytest
from django.core.management import call_command

from backups.backup.run import backup_run
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.housekeeping.reconcile import storage_reconcile
from backups.models import BackupEvent, BackupRecord
from backups.restore.run import restore_verify
from backups.storage import get_storage

SCHEMA = "clinica_sonrisa"


@pytest.fixture
def backup():
    """A real, succeeded backup of a demo clinic (record, object and manifest); removed afterwards."""
    made = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="dump").pk)
    assert made.status == "succeeded", made.error
    yield made
    BackupRecord.objects.filter(storage_key__startswith=made.storage_key).delete()
    for key in (made.storage_key, manifest_key(made.storage_key)):
        get_storage().delete(key)


def test_a_record_whose_object_is_gone_becomes_failed(backup):
    get_storage().delete(backup.storage_key)
    dry = storage_reconcile(schemas=[SCHEMA], dry_run=True)
    assert dry.missing == [backup.storage_key] and BackupRecord.objects.get(pk=backup.pk).status == "succeeded"
    result = storage_reconcile(schemas=[SCHEMA])
    assert result.missing == [backup.storage_key]
    record = BackupRecord.objects.get(pk=backup.pk)
    assert record.status == "failed" and "is gone" in record.error
    assert BackupEvent.objects.filter(record=record, action="fail", actor={"reconcile": True}).exists()
    assert storage_reconcile(schemas=[SCHEMA]).missing == []  # already failed: reported once


def test_a_lost_record_is_rebuilt_from_its_manifest_and_restores(backup):
    original = {f: getattr(backup, f) for f in ("file_name", "format", "compression", "size", "sha256",
                                                "plain_sha256", "backup_type")}
    BackupRecord.objects.filter(pk=backup.pk).delete()  # the catalog lost it; storage still has both objects
    result = storage_reconcile(schemas=[SCHEMA])
    assert result.imported == [backup.storage_key] and result.unknown == []
    (rebuilt,) = BackupRecord.objects.filter(storage_key=backup.storage_key)
    assert rebuilt.status == "succeeded" and rebuilt.pk != backup.pk
    assert {f: getattr(rebuilt, f) for f in original} == original
    assert rebuilt.tenant.schema_name == SCHEMA  # found again by its schema
    assert rebuilt.manifest["row_counts"] == backup.manifest["row_counts"]
    assert rebuilt.created_at == backup.created_at
    report = restore_verify(schema=SCHEMA, record=rebuilt)
    assert report.ok, report.message
    assert storage_reconcile(schemas=[SCHEMA]).imported == []  # once


def test_objects_without_a_usable_manifest_are_only_reported(backup):
    storage = get_storage()
    stray = f"{SCHEMA}/backup-sql-{SCHEMA}-2020-01-01-000000.sql.zst"
    storage.put_bytes(stray, b"no manifest beside me")
    BackupRecord.objects.filter(pk=backup.pk).delete()
    storage.delete(manifest_key(backup.storage_key))
    storage.put_bytes(manifest_key(backup.storage_key), b'{"schema": "clinica_norte"}')  # describes another object
    try:
        out = StringIO()
        call_command("reconcile_backups", SCHEMA, stdout=out)
        again = storage_reconcile(schemas=[SCHEMA], dry_run=True)
        assert again.unknown == [stray]
        assert list(again.rejected) == [backup.storage_key]
        assert "not signed" in again.rejected[backup.storage_key]
        assert not BackupRecord.objects.filter(storage_key__in=[stray, backup.storage_key]).exists()
        assert storage.get_bytes(stray) == b"no manifest beside me"  # nothing deleted
        assert "1 unknown objects, 1 refused" in out.getvalue() and "0 were rebuilt" in out.getvalue()
    finally:
        storage.delete(stray)
