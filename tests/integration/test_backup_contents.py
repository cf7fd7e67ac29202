"""What a backup holds: only its tenant, a filled manifest, checksums that match the bytes."""

import hashlib
import json

import pytest
import zstandard
from django.db import connection

from backups.backup.run import backup_run
from backups.catalog.manifest import manifest_key
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.storage import get_storage
from tests.identities import prefix

from .helpers import schema_tables


def _plain_bytes(record: BackupRecord) -> bytes:
    data = get_storage().get_bytes(record.storage_key)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data) if record.compression == "zstd" else data


@pytest.mark.parametrize("fmt", ["sql", "dump", "json"])
def test_backup_contains_no_other_tenant_rows(fmt):
    record = backup_run(record_id=backup_record_create(schema_name="clinica_demo", fmt=fmt, compression="none").pk)
    data = _plain_bytes(record)
    assert b"paciente7@clinica_demo.example" in data
    assert b"clinica_sonrisa" not in data
    assert b"clinica_norte" not in data
    assert b"backups_backuprecord" not in data  # shared tables never travel with a tenant


@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_manifest_is_filled_and_matches_the_stored_bytes(fmt):
    record = backup_run(record_id=backup_record_create(schema_name="clinica_norte", fmt=fmt).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED
    manifest = record.manifest
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        assert manifest["postgresql_version"] == cur.fetchone()[0]
    assert manifest["dump_tool"] == ("django" if fmt == "json" else "pg_dump")
    assert manifest["dump_tool_version"]
    assert "0001_initial" in manifest["migrations"]["clinic"]
    assert manifest["schema"] == "clinica_norte" and manifest["format"] == fmt
    tables = manifest["row_counts"]
    if fmt == "sql":
        assert set(tables) == set(schema_tables("clinica_norte"))
    with connection.cursor() as cur:
        for table, count in tables.items():
            cur.execute(f'SELECT count(*) FROM clinica_norte."{table}"')
            assert cur.fetchone()[0] == count
    assert tables["clinic_invoice"] == 1200

    storage = get_storage()
    stored = storage.get_bytes(record.storage_key)
    assert hashlib.sha256(stored).hexdigest() == record.sha256 == manifest["sha256"]
    assert len(stored) == record.size
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    assert hashlib.sha256(plain).hexdigest() == record.plain_sha256
    beside = json.loads(storage.get_bytes(manifest_key(record.storage_key)))
    assert beside == manifest


def test_file_name_follows_the_convention_and_never_collides():
    first = backup_record_create(schema_name="clinica_demo", fmt="dump", compression="gzip")
    second = backup_record_create(schema_name="clinica_demo", fmt="dump", compression="gzip")
    assert first.file_name.startswith("backup-dump-clinica_demo-") and first.file_name.endswith(".dump.gz")
    assert first.storage_key == prefix("clinica_demo") + first.file_name
    assert second.storage_key != first.storage_key
    BackupRecord.objects.filter(pk__in=[first.pk, second.pk]).delete()
