"""A tenant tied to objects outside its schema: drills pass, replaces never drop what lies outside.

The ordinary django-tenants patterns (a foreign key to the tenant model in public, an extension's function as a
default, a shared sequence, a trigger function or a domain in public) made every drill fail; objects in public
depending on the tenant (a view, a foreign key) were dropped by a replace without a word.
"""

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


def _sql(*statements: str, params: tuple = ()) -> None:
    with connection.cursor() as cur:
        for statement in statements:
            cur.execute(statement, params or None)


pytestmark = pytest.mark.usefixtures("forget_new_backups")


@pytest.fixture
def tied_to_public():
    """A tenant table using public the way real apps do; removed afterwards."""
    _sql('CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public',
         "CREATE SEQUENCE public.tb_shared_seq",
         "CREATE FUNCTION public.tb_audit_row() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN NEW.touched := true; RETURN NEW; END $$",
         "CREATE DOMAIN public.tb_positive AS integer CHECK (VALUE > 0)",
         f"""CREATE TABLE {SCHEMA}.tb_ties (
                id integer PRIMARY KEY DEFAULT nextval('public.tb_shared_seq'),
                uid uuid NOT NULL DEFAULT public.uuid_generate_v4(),
                clinic_id integer NOT NULL REFERENCES public.tenants_clinica(id),
                amount public.tb_positive,
                touched boolean)""",
         f"CREATE TRIGGER tb_touch BEFORE INSERT ON {SCHEMA}.tb_ties FOR EACH ROW "
         "EXECUTE FUNCTION public.tb_audit_row()")
    _sql(f"INSERT INTO {SCHEMA}.tb_ties (clinic_id, amount) SELECT id, 5 FROM public.tenants_clinica "
         "WHERE schema_name = %s", params=(SCHEMA,))
    try:
        yield
    finally:
        _sql(f"DROP TABLE IF EXISTS {SCHEMA}.tb_ties", "DROP FUNCTION IF EXISTS public.tb_audit_row()",
             "DROP DOMAIN IF EXISTS public.tb_positive", "DROP SEQUENCE IF EXISTS public.tb_shared_seq")


def _backup(fmt: str) -> BackupRecord:
    record = backup_run(record_id=backup_record_create(schema_name=SCHEMA, fmt=fmt).pk)
    assert record.status == BackupRecord.Status.SUCCEEDED, record.error
    return record


@pytest.mark.parametrize("fmt", ["sql", "dump"])
def test_the_drill_of_a_tenant_using_public_passes(tied_to_public, fmt):
    record = _backup(fmt)
    assert record.manifest["row_counts"]["tb_ties"] == 1
    report = restore_verify(schema=SCHEMA, record=record)
    assert report.ok, report.message
    assert report.row_counts["tb_ties"] == (1, 1)


def test_the_drill_still_fails_on_real_damage(tied_to_public):
    record = _backup("sql")
    manifest = dict(record.manifest)
    manifest["row_counts"] = {**manifest["row_counts"], "tb_ties": 2}
    BackupRecord.objects.filter(pk=record.pk).update(manifest=manifest)
    record.refresh_from_db()
    report = restore_verify(schema=SCHEMA, record=record)
    assert not report.ok and report.row_counts["tb_ties"] == (2, 1)


def test_a_replace_of_a_tenant_using_public_keeps_its_ties(tied_to_public):
    record = _backup("dump")
    _sql(f"DELETE FROM {SCHEMA}.tb_ties")
    report = restore_replace(schema=SCHEMA, record=record, safety_backup=False)
    assert report.ok, report.message
    with connection.cursor() as cur:
        cur.execute(f"SELECT count(*), bool_and(touched) FROM {SCHEMA}.tb_ties")
        assert cur.fetchone() == (1, True)
        cur.execute(f"INSERT INTO {SCHEMA}.tb_ties (clinic_id, amount) SELECT id, 1 FROM public.tenants_clinica "
                    "WHERE schema_name = %s RETURNING touched, uid IS NOT NULL", (SCHEMA,))
        assert cur.fetchone() == (True, True)  # trigger, defaults and foreign key work after the replace


@pytest.mark.parametrize("dependent", [
    ("CREATE VIEW public.tb_patients AS SELECT id FROM {schema}.clinic_patient", "DROP VIEW public.tb_patients",
     "tb_patients"),
    ("CREATE TABLE public.tb_refs (patient_id bigint REFERENCES {schema}.clinic_patient(id))",
     "DROP TABLE public.tb_refs", "tb_refs"),
    ("CREATE TABLE public.tb_numbers (n bigint DEFAULT nextval('{schema}.clinic_patient_id_seq'))",
     "DROP TABLE public.tb_numbers", "tb_numbers"),
])
@pytest.mark.parametrize("fmt", ["sql", "json"])
def test_a_replace_refuses_to_drop_objects_outside_the_tenant(dependent, fmt):
    create, drop, name = dependent
    record = _backup(fmt)
    _sql(create.format(schema=SCHEMA))
    try:
        before = table_fingerprints(SCHEMA, DEMO_TABLES)
        safety_before = BackupRecord.objects.filter(schema_name=SCHEMA, backup_type="pre_restore").count()
        with pytest.raises(RestoreFailed, match=f"depend on it.*{name}"):
            restore_replace(schema=SCHEMA, record=record)
        assert table_fingerprints(SCHEMA, DEMO_TABLES) == before
        assert BackupRecord.objects.filter(schema_name=SCHEMA, backup_type="pre_restore").count() == safety_before
        with connection.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"public.{name}",))
            assert cur.fetchone()[0] is not None
    finally:
        _sql(drop)


def test_a_json_replace_never_drops_what_the_backup_does_not_hold():
    record = _backup("json")
    _sql(f"CREATE TABLE {SCHEMA}.tb_reports (id integer)", f"INSERT INTO {SCHEMA}.tb_reports VALUES (1)")
    try:
        with pytest.raises(RestoreFailed, match="tb_reports"):
            restore_replace(schema=SCHEMA, record=record, safety_backup=False)
        with connection.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.tb_reports")
            assert cur.fetchone()[0] == 1
    finally:
        _sql(f"DROP TABLE {SCHEMA}.tb_reports")


def test_the_safety_backup_of_a_json_replace_is_a_full_dump():
    record = _backup("json")
    report = restore_replace(schema=SCHEMA, record=record)
    assert report.ok, report.message
    safety = BackupRecord.objects.get(pk=report.safety_record_id)
    assert safety.format == BackupRecord.Format.DUMP and safety.status == BackupRecord.Status.SUCCEEDED


def test_a_retried_replace_reuses_its_safety_backup():
    record = _backup("sql")
    told: list[int] = []
    first = restore_replace(schema=SCHEMA, record=record, on_safety=told.append)
    assert told == [first.safety_record_id]
    again = restore_replace(schema=SCHEMA, record=record, safety_record_id=first.safety_record_id,
                            on_safety=told.append)
    assert again.safety_record_id == first.safety_record_id and told == [first.safety_record_id]
