"""Every format x compression backs up and restores to identical data, through the real tools."""

import pytest
from django.db import connection

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_sonrisa"


def _vandalize(schema: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DELETE FROM {schema}.clinic_invoice WHERE id % 3 = 0")
        cur.execute(f"UPDATE {schema}.clinic_patient SET nombre = 'Borrado' WHERE id < 100")
        cur.execute(f"UPDATE {schema}.accounts_user SET nombre = 'Otro' ")


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("fmt", ["sql", "dump", "json"])
def test_backup_and_replace_restore_give_identical_data(fmt, compression):
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    record = backup_record_create(schema_name=SCHEMA, fmt=fmt, compression=compression)
    record = backup_run(record_id=record.pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error

    verify = restore_verify(schema=SCHEMA, record=record)
    assert verify.ok, verify.message
    assert verify.row_counts and not verify.mismatches
    assert verify.row_counts["clinic_patient"] == (1200, 1200)

    _vandalize(SCHEMA)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) != before

    report = restore_replace(schema=SCHEMA, record=record, actor={"test": True})
    assert report.ok, report.message
    assert report.safety_record_id is not None
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    with connection.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (SCHEMA + "_old_%",))
        assert cur.fetchall() == []
        # sequences follow the restored rows: a new row gets a fresh id
        cur.execute(f"INSERT INTO {SCHEMA}.clinic_patient (nombre, apellidos, email, telefono, notas, created_at) "
                    "VALUES ('Nueva', 'Paciente', '', '', '', now()) RETURNING id")
        new_id = cur.fetchone()[0]
        cur.execute(f"SELECT max(id) FROM {SCHEMA}.clinic_patient WHERE id <> %s", (new_id,))
        assert new_id > cur.fetchone()[0]
        cur.execute(f"DELETE FROM {SCHEMA}.clinic_patient WHERE id = %s", (new_id,))


def test_safety_backup_holds_the_state_before_the_restore():
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql").pk)
    _vandalize(SCHEMA)
    vandalized = table_fingerprints(SCHEMA, DEMO_TABLES)
    report = restore_replace(schema=SCHEMA, record=record)
    safety = BackupRecord.objects.get(pk=report.safety_record_id)
    assert safety.backup_type == BackupRecord.Type.PRE_RESTORE
    assert safety.status == BackupRecord.Status.SUCCEEDED
    # restoring the safety copy brings the vandalized state back: it really held the pre-restore data
    restore_replace(schema=SCHEMA, record=safety, safety_backup=False)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == vandalized
    restore_replace(schema=SCHEMA, record=record, safety_backup=False)
