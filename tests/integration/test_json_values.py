"""A json backup carries every value the tenant's fields hold back exactly, or fails at once naming table, column
and row: a non-finite decimal or a date outside Python's range never makes a "succeeded", unrestorable backup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from backups.backup.batch.run import batch_backup_run
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.storage import get_storage

SCHEMA = "clinica_norte"


@pytest.fixture
def odd_value(request) -> Iterator[tuple[str, str, int]]:
    """Set one committed row's column to `value` (pg_dump and workers see only committed data); put it back."""
    table, column, value = request.param
    with connection.cursor() as cur:
        cur.execute(f"SELECT id, {column} FROM {SCHEMA}.{table} WHERE {column} IS NOT NULL ORDER BY id "
                    "OFFSET 7 LIMIT 1")
        pk, old = cur.fetchone()
        cur.execute(f"UPDATE {SCHEMA}.{table} SET {column} = %s WHERE id = %s", (value, pk))
    try:
        yield table, column, pk
    finally:
        with connection.cursor() as cur:
            cur.execute(f"UPDATE {SCHEMA}.{table} SET {column} = %s WHERE id = %s", (old, pk))


ODD_VALUES = [
    ("clinic_treatment", "price", "NaN"),
    ("clinic_invoice", "issued_at", "infinity"),
    ("clinic_appointment", "starts_at", "-infinity"),
    ("clinic_patient", "fecha_nacimiento", "-infinity"),
    ("clinic_patient", "fecha_nacimiento", "12000-01-01"),
]


@pytest.mark.parametrize("odd_value", ODD_VALUES, indirect=True, ids=[f"{c}={v}" for _, c, v in ODD_VALUES])
def test_a_value_json_cannot_carry_fails_the_backup_naming_table_column_and_row(odd_value):
    table, column, pk = odd_value
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="json").pk)
    assert record.status == BackupRecord.Status.FAILED
    assert f"Table '{table}', row id={pk}: column '{column}'" in record.error, record.error
    assert "sql or dump format" in record.error
    assert get_storage().stat(record.storage_key) is None


@pytest.mark.parametrize("odd_value", ODD_VALUES[:2], indirect=True, ids=["NaN", "infinity"])
def test_the_batch_path_fails_a_json_member_the_same_way(odd_value):
    table, column, pk = odd_value
    record = backup_record_create(schema_name=SCHEMA, fmt="json")
    result = batch_backup_run(record_ids=[record.pk])
    record.refresh_from_db()
    assert result.failed == [record.pk]
    assert f"Table '{table}', row id={pk}: column '{column}'" in record.error, record.error
