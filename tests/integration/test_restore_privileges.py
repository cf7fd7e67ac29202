"""A replace keeps the tenant's owners and grants: a least-privilege web role still works after a restore."""

from __future__ import annotations

import pytest
from django.db import connection

from backups.backup.run import backup_run
from backups.catalog.records import backup_record_create
from backups.core.errors import RestoreFailed
from backups.models import BackupRecord
from backups.restore.run import restore_replace, restore_verify

from .helpers import DEMO_TABLES, table_fingerprints

SCHEMA = "clinica_sonrisa"
WEB, OWNER, GONE = "tb_web_role", "tb_owner_role", "tb_gone_role"


def _sql(*statements: str) -> None:
    with connection.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _one(query: str, params: tuple = ()):
    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def _drop_role(role: str) -> None:
    if _one("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)):
        _sql(f"DROP OWNED BY {role}", f"DROP ROLE {role}")


pytestmark = pytest.mark.usefixtures("forget_new_backups")


@pytest.fixture
def least_privilege():
    """A web role with only what it needs, an object owned by another role, default privileges."""
    for role in (WEB, OWNER):
        _drop_role(role)
        _sql(f"CREATE ROLE {role} NOLOGIN")
    _sql(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {WEB}",
         f"GRANT SELECT, INSERT ON {SCHEMA}.clinic_patient TO {WEB}",
         f"GRANT USAGE ON SEQUENCE {SCHEMA}.clinic_patient_id_seq TO {WEB}",
         f"GRANT SELECT (id) ON {SCHEMA}.clinic_invoice TO {WEB}",
         f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT SELECT ON TABLES TO {WEB}",
         f"CREATE TABLE {SCHEMA}.tb_owned (id integer)",
         f"ALTER TABLE {SCHEMA}.tb_owned OWNER TO {OWNER}")
    try:
        yield
    finally:
        _sql(f"DROP TABLE IF EXISTS {SCHEMA}.tb_owned")
        for role in (WEB, OWNER):
            _drop_role(role)


def _privileges() -> dict:
    checks = {
        "schema usage": f"SELECT has_schema_privilege('{WEB}', '{SCHEMA}', 'USAGE')",
        "insert": f"SELECT has_table_privilege('{WEB}', '{SCHEMA}.clinic_patient', 'INSERT')",
        "no delete": f"SELECT NOT has_table_privilege('{WEB}', '{SCHEMA}.clinic_patient', 'DELETE')",
        "sequence": f"SELECT has_sequence_privilege('{WEB}', '{SCHEMA}.clinic_patient_id_seq', 'USAGE')",
        "column": f"SELECT has_column_privilege('{WEB}', '{SCHEMA}.clinic_invoice', 'id', 'SELECT')",
        "no other column": f"SELECT NOT has_table_privilege('{WEB}', '{SCHEMA}.clinic_invoice', 'SELECT')",
        "defaults": f"SELECT count(*) = 1 FROM pg_default_acl WHERE defaclnamespace = '{SCHEMA}'::regnamespace",
        "owner": f"SELECT pg_get_userbyid(relowner) = '{OWNER}' FROM pg_class "
                 f"WHERE oid = '{SCHEMA}.tb_owned'::regclass",
    }
    return {name: _one(query) for name, query in checks.items()}


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_a_replace_keeps_owners_and_grants(least_privilege, fmt):
    assert all(_privileges().values())
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    assert WEB in record.manifest["privileges"]["roles"] and OWNER in record.manifest["privileges"]["roles"]
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok, report.message
    assert _privileges() == {name: True for name in _privileges()}
    with connection.cursor() as cur:  # the web role itself, not a superuser, works after the restore
        cur.execute(f"SET ROLE {WEB}")
        try:
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.clinic_patient")
            assert cur.fetchone()[0] > 0
        finally:
            cur.execute("RESET ROLE")
    assert restore_verify(schema=SCHEMA, record=record).ok


def test_a_missing_role_refuses_the_restore_naming_it(least_privilege):
    _drop_role(GONE)
    _sql(f"CREATE ROLE {GONE} NOLOGIN", f"GRANT SELECT ON {SCHEMA}.clinic_treatment TO {GONE}")
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql").pk)
    _drop_role(GONE)
    before = table_fingerprints(SCHEMA, DEMO_TABLES)
    with pytest.raises(RestoreFailed, match=f"roles this database does not have: {GONE}"):
        restore_replace(schema=SCHEMA, record=record)
    assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
    assert not BackupRecord.objects.filter(schema_name=SCHEMA, backup_type="pre_restore", pk__gt=record.pk).exists()


def test_the_setting_restores_without_them(least_privilege, settings):
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt="sql").pk)
    settings.BACKUPS_RESTORE_PRIVILEGES = False
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok, report.message
    assert not _one(f"SELECT has_table_privilege('{WEB}', '{SCHEMA}.clinic_patient', 'INSERT')")
    assert _one(f"SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = '{SCHEMA}.tb_owned'::regclass") \
        == _one("SELECT current_user")
