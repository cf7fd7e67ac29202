"""A restore that fails at any point leaves the live schema exactly as it was."""

import pytest
import zstandard
from django.db import connection
from django.utils import timezone

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import RestoreFailed
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify
from backups.storage import get_storage

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_norte"


# These tests make succeeded backups that cannot restore on purpose: gone afterwards, so no later test (a drill,
# a restore of the tenant's newest backup) takes one for a good backup.
pytestmark = pytest.mark.usefixtures("forget_new_backups")


def _leftover_schemas() -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (SCHEMA + "_old_%",))
        return [r[0] for r in cur.fetchall()]


def _store_copy(record: BackupRecord, plain: bytes) -> BackupRecord:
    """A new succeeded record whose object holds `plain`, checksums consistent (so only the content is wrong)."""
    import hashlib

    copy = backup_record_create(schema_name=record.schema_name, fmt=record.format, compression="zstd")
    data = zstandard.ZstdCompressor().compress(plain)
    get_storage().put_bytes(copy.storage_key, data)
    BackupRecord.objects.filter(pk=copy.pk).update(
        status=BackupRecord.Status.SUCCEEDED, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        manifest=record.manifest, finished_at=timezone.now(),
    )
    copy.refresh_from_db()
    return copy


@pytest.fixture
def good_sql_backup() -> BackupRecord:
    return backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql", compression="zstd").pk)


def test_restore_failing_halfway_puts_the_old_schema_back(good_sql_backup):
    stored = get_storage().get_bytes(good_sql_backup.storage_key)
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    cut = plain.index(b"COPY clinica_norte.clinic_invoice")
    broken = _store_copy(good_sql_backup, plain[:cut] + b"\nTHIS IS NOT SQL;\n" + plain[cut:])
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(RestoreFailed, match="The server refused the backup.s SQL: syntax error"):
        restore_replace(schema=SCHEMA, record=broken, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert _leftover_schemas() == []


@pytest.mark.parametrize("fmt", ["sql", "dump", "json"])
def test_restore_with_wrong_row_counts_rolls_back(fmt):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    manifest = dict(record.manifest)
    manifest["row_counts"] = {**manifest["row_counts"], "clinic_patient": manifest["row_counts"]["clinic_patient"] + 1}
    BackupRecord.objects.filter(pk=record.pk).update(manifest=manifest)
    record.refresh_from_db()
    with connection.cursor() as cur:
        cur.execute(f"UPDATE {SCHEMA}.clinic_patient SET notas = 'cambiado' WHERE id = 1")
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(RestoreFailed, match="clinic_patient"):
        restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert _leftover_schemas() == []
    report = restore_verify(schema=SCHEMA, record=record)
    assert not report.ok and set(report.mismatches) == {"clinic_patient"}


def test_damaged_object_is_refused_and_nothing_changes(good_sql_backup):
    path = get_storage().path(good_sql_backup.storage_key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(RestoreFailed):
        restore_replace(schema=SCHEMA, record=good_sql_backup, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert _leftover_schemas() == []


def test_restore_refuses_another_tenants_backup(good_sql_backup):
    with pytest.raises(RestoreFailed, match="was taken from schema"):
        restore_replace(schema="clinica_demo", record=good_sql_backup)


def test_restore_refuses_a_failed_backup():
    failed = backup_run(record_id=backup_record_create(schema_name="clinica_gone").pk)
    with pytest.raises(RestoreFailed, match="only a succeeded backup"):
        restore_replace(schema="clinica_gone", record=failed)
