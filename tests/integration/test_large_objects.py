"""Large objects never travel with `pg_dump -n`: a backup of a tenant whose rows reference some fails, naming
table.column, on every path (sql, dump, json, a batch); an oid column that references none still backs up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django_tenants.utils import get_tenant_model

from backups.backup.batch.run import batch_backup_run
from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.models import BackupRecord
from backups.storage import get_storage

from .conftest import DEMO_SCHEMAS

SCHEMA = "clinica_demo"


@pytest.fixture
def oid_table() -> Iterator[list[int]]:
    """A committed table with an oid column and one of a domain over oid (what the `lo` extension's type is),
    both NULL; the test points them at large objects it creates through the returned list (unlinked after)."""
    made: list[int] = []
    with connection.cursor() as cur:
        cur.execute(f"CREATE DOMAIN {SCHEMA}.lo_ref AS oid")
        cur.execute(f"CREATE TABLE {SCHEMA}.lo_docs (id serial PRIMARY KEY, doc oid, att {SCHEMA}.lo_ref)")
        cur.execute(f"INSERT INTO {SCHEMA}.lo_docs (doc, att) VALUES (NULL, NULL), (NULL, NULL)")
    try:
        yield made
    finally:
        with connection.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {SCHEMA}.lo_docs")
            cur.execute(f"DROP DOMAIN IF EXISTS {SCHEMA}.lo_ref")
            for oid in made:
                cur.execute("SELECT lo_unlink(%s) FROM pg_largeobject_metadata WHERE oid = %s", (oid, oid))


def _reference_large_objects(made: list[int]) -> None:
    with connection.cursor() as cur:
        for column in ("doc", "att"):
            cur.execute("SELECT lo_from_bytea(0, 'an x-ray')")
            made.append(cur.fetchone()[0])
            cur.execute(f"UPDATE {SCHEMA}.lo_docs SET {column} = %s WHERE id = 1", (made[-1],))


def _assert_refused(record: BackupRecord) -> None:
    assert record.status == BackupRecord.Status.FAILED
    assert "large objects" in record.error
    assert "lo_docs.doc (1 large object)" in record.error and "lo_docs.att (1 large object)" in record.error
    assert get_storage().stat(record.storage_key) is None


@pytest.mark.parametrize("fmt", ["sql", "dump", "json"])
def test_a_backup_of_a_tenant_referencing_large_objects_fails_naming_the_columns(oid_table, fmt):
    _reference_large_objects(oid_table)
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    _assert_refused(record)


def test_a_batch_member_referencing_large_objects_fails_alone(oid_table, tmp_path, settings):
    settings.BACKUPS_SPOOL_DIR = str(tmp_path)
    _reference_large_objects(oid_table)
    Tenant = get_tenant_model()
    records = [backup_record_create(schema_name=s, tenant=Tenant.objects.get(schema_name=s), fmt="sql")
               for s in DEMO_SCHEMAS[:2]]
    result = batch_backup_run(record_ids=[r.pk for r in records])
    assert result.dumped == 2 and not result.alone
    refused, other = (BackupRecord.objects.get(pk=r.pk) for r in records)
    _assert_refused(refused)
    assert result.failed == [refused.pk] and result.succeeded == [other.pk]
    assert other.status == BackupRecord.Status.SUCCEEDED, other.error


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_an_oid_column_that_references_no_large_object_backs_up(oid_table, fmt):
    with connection.cursor() as cur:
        cur.execute("SELECT coalesce(max(oid::bigint), 0) + 1000 FROM pg_largeobject_metadata")
        unused = cur.fetchone()[0]
        cur.execute(f"UPDATE {SCHEMA}.lo_docs SET doc = %s, att = %s WHERE id = 2", (unused, unused + 1))
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
