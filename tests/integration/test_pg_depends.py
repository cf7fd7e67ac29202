"""pg_depend readings of a tenant schema: what DROP SCHEMA CASCADE takes from elsewhere, what the tenant needs from
elsewhere, and a scratch database the tenant's backup loads into with its foreign keys validated.

Real PostgreSQL, committed DDL (pg_dump only sees committed objects), dropped in the fixtures."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection

from backups.postgres import pgtools
from backups.postgres.pg_depends import Dependencies, dependencies_outside, dependents_outside, prepare_scratch
from backups.storage.spools import spool_dir
from tests.integration.conftest import DEMO_SCHEMAS

X = "tb_dep_x"
T = "tb_dep_t"


def _run_sql(*statements: str) -> None:
    with pgtools.connect(autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def schema_with_dependents() -> Iterator[None]:
    """tb_dep_x (a table, a sequence, a function) and public objects that DROP SCHEMA tb_dep_x CASCADE would take."""
    try:
        _run_sql(
            f"CREATE SCHEMA {X}",
            f"CREATE TABLE {X}.t (id int PRIMARY KEY, name text)",
            f"CREATE SEQUENCE {X}.s",
            f"CREATE FUNCTION {X}.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
            f"CREATE VIEW public.tb_dep_v AS SELECT id, name FROM {X}.t",
            "CREATE VIEW public.tb_dep_v2 AS SELECT id FROM public.tb_dep_v",
            f"CREATE TABLE public.tb_dep_pub (id bigint DEFAULT nextval('{X}.s'), t_id int REFERENCES {X}.t)",
            f"CREATE FUNCTION public.tb_dep_name(r {X}.t) RETURNS text LANGUAGE sql AS 'SELECT r.name'",
            f"CREATE TRIGGER tb_dep_trg BEFORE INSERT ON public.tb_dep_pub FOR EACH ROW EXECUTE FUNCTION {X}.touch()",
        )
        yield
    finally:
        _run_sql("DROP VIEW IF EXISTS public.tb_dep_v2", "DROP VIEW IF EXISTS public.tb_dep_v",
                 "DROP TABLE IF EXISTS public.tb_dep_pub", f"DROP SCHEMA IF EXISTS {X} CASCADE")


DEPENDENTS = [
    "default value for public.tb_dep_pub.id",
    "function public.tb_dep_name(tb_dep_x.t)",
    "table constraint tb_dep_pub_t_id_fkey on public.tb_dep_pub",
    "trigger tb_dep_trg on public.tb_dep_pub",
    "view public.tb_dep_v",
    "view public.tb_dep_v2",
]


def test_dependents_outside_names_what_drop_cascade_takes(schema_with_dependents):
    with pgtools.connect() as conn:
        assert dependents_outside(conn, X) == DEPENDENTS
        with conn.cursor() as cur:
            assert dependents_outside(cur, X) == DEPENDENTS
        conn.execute(f"DROP SCHEMA {X} CASCADE")
        gone = conn.execute("""SELECT to_regclass('public.tb_dep_v'), to_regclass('public.tb_dep_v2'),
            (SELECT count(*) FROM pg_proc WHERE proname = 'tb_dep_name'),
            (SELECT count(*) FROM pg_attrdef WHERE adrelid = 'public.tb_dep_pub'::regclass),
            (SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.tb_dep_pub'::regclass),
            (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.tb_dep_pub'::regclass)""").fetchone()
        conn.rollback()
    assert gone == (None, None, 0, 0, 0, 0)


def test_dependents_outside_accepts_a_django_cursor(schema_with_dependents):
    with connection.cursor() as cur:
        assert dependents_outside(cur, X) == DEPENDENTS
    assert dependents_outside(connection, X) == DEPENDENTS


@pytest.mark.parametrize("schema", DEMO_SCHEMAS)
def test_demo_tenants_share_nothing(schema):
    with pgtools.connect() as conn:
        assert dependents_outside(conn, schema) == []
        found = dependencies_outside(conn, schema)
    assert found.fk_tables == [] and found.schemas == []


def _uuid_ossp() -> bool:
    """Make sure uuid-ossp is installed; True when this call created it."""
    with pgtools.connect(autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'uuid-ossp'").fetchone():
            return False
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp'").fetchone():
            pytest.fail("The uuid-ossp extension is not available on the test server: install postgresql-contrib "
                        "(Debian: postgresql-15's contrib modules) and run again.", pytrace=False)
        conn.execute('CREATE EXTENSION "uuid-ossp" WITH SCHEMA public')
        return True


@pytest.fixture
def tenant_using_public() -> Iterator[int]:
    """tb_dep_t: an FK to the tenant model and to a shared lookup, a uuid_generate_v4() default, a nextval of a public
    sequence, a trigger calling a public function, a column of a public domain. Also public objects depending on
    tb_dep_t (a view, a table whose default uses its sequence, an FK into it) that a scratch database cannot hold.
    Yields the demo clinic's id the rows point at."""
    created_extension = _uuid_ossp()
    with pgtools.connect() as conn:
        clinic_id = conn.execute("SELECT id FROM public.tenants_clinica WHERE schema_name = %s",
                                 (DEMO_SCHEMAS[0],)).fetchone()[0]
    try:
        _run_sql(
            "CREATE DOMAIN public.tb_dep_qty AS int CHECK (VALUE > 0)",
            "CREATE SEQUENCE public.tb_dep_seq",
            "CREATE TABLE public.tb_dep_ref (id int PRIMARY KEY, label text NOT NULL)",
            "INSERT INTO public.tb_dep_ref VALUES (1, 'one'), (2, 'two'), (3, 'three')",
            "CREATE FUNCTION public.tb_dep_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.note := coalesce(NEW.note, 'audited'); RETURN NEW; END$$",
            f"CREATE SCHEMA {T}",
            f"""CREATE TABLE {T}.item (
                id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
                n bigint NOT NULL DEFAULT nextval('public.tb_dep_seq'),
                qty public.tb_dep_qty NOT NULL,
                clinica_id int NOT NULL REFERENCES public.tenants_clinica (id),
                ref_id int REFERENCES public.tb_dep_ref (id),
                note text)""",
            f"CREATE TRIGGER item_audit BEFORE INSERT OR UPDATE ON {T}.item FOR EACH ROW "
            "EXECUTE FUNCTION public.tb_dep_audit()",
            f"CREATE SEQUENCE {T}.own_seq",
            f"INSERT INTO {T}.item (qty, clinica_id, ref_id) "
            f"SELECT g, {clinic_id}, 1 + g % 2 FROM generate_series(1, 50) g",
            f"CREATE VIEW public.tb_dep_tv AS SELECT id, qty FROM {T}.item",
            f"CREATE TABLE public.tb_dep_tpub (n bigint DEFAULT nextval('{T}.own_seq'), "
            f"item_id uuid REFERENCES {T}.item (id))",
        )
        yield clinic_id
    finally:
        _run_sql("DROP VIEW IF EXISTS public.tb_dep_tv", "DROP TABLE IF EXISTS public.tb_dep_tpub",
                 f"DROP SCHEMA IF EXISTS {T} CASCADE", "DROP TABLE IF EXISTS public.tb_dep_ref",
                 "DROP FUNCTION IF EXISTS public.tb_dep_audit()", "DROP SEQUENCE IF EXISTS public.tb_dep_seq",
                 "DROP DOMAIN IF EXISTS public.tb_dep_qty")
        if created_extension:
            _run_sql('DROP EXTENSION IF EXISTS "uuid-ossp"')


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """An empty database made as the verify drill makes its own, dropped at the end."""
    name = f"tb_dep_scratch_{secrets.token_hex(3)}"
    _run_sql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
    try:
        yield name
    finally:
        _run_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _dump(schema: str, path: str) -> None:
    """The backup's own pg_dump options (custom format)."""
    bins = pgtools.binaries()
    subprocess.run([bins.pg_dump, f"--schema={schema}", "--strict-names", "--no-owner", "--no-acl",
                    "--format=custom", f"--file={path}"], env=pgtools.pg_dump_env(), check=True)


def _load(scratch: str, path: str) -> subprocess.CompletedProcess:
    bins = pgtools.binaries()
    return subprocess.run([bins.pg_restore, f"--dbname={scratch}", "--exit-on-error", "--single-transaction", path],
                          env=pgtools.libpq_env(dbname=scratch), capture_output=True, text=True)


def _fingerprint(conn: psycopg.Connection) -> tuple:
    return conn.execute(f"SELECT count(*), md5(string_agg(i::text, '|' ORDER BY i.id)) FROM {T}.item i").fetchone()


def _scratch_files() -> set[str]:
    return {f for f in os.listdir(spool_dir()) if f.startswith("tb-scratch-")}


def test_dependencies_outside_finds_what_the_tenant_uses(tenant_using_public):
    with pgtools.connect() as conn:
        found = dependencies_outside(conn, T)
        ext_schema = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                                  "WHERE extname = 'uuid-ossp'").fetchone()[0]
    assert isinstance(found, Dependencies)
    assert found.schemas == sorted({"public", ext_schema})
    assert found.fk_tables == [("public", "tb_dep_ref"), ("public", "tenants_clinica")]
    assert ("uuid-ossp", ext_schema) in found.extensions


K = "tb_dep_k"
SHARED = [f"tb_dep_s{i}" for i in range(1, 8)]


@pytest.fixture
def tenant_using_many_schemas() -> Iterator[None]:
    """tb_dep_k using one kind of object from each of tb_dep_s1..s7: a sequence in a default, a function in a
    default, a trigger's function, a domain column (whose base type lives in s7), a view over a table, an FK."""
    s1, s2, s3, s4, s5, s6, s7 = SHARED
    try:
        _run_sql(
            *(f"CREATE SCHEMA {s}" for s in SHARED),
            f"CREATE SEQUENCE {s1}.seq",
            f"CREATE FUNCTION {s2}.code() RETURNS text LANGUAGE sql AS $$SELECT 'c-' || md5(random()::text)$$",
            f"CREATE FUNCTION {s3}.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
            f"CREATE TYPE {s7}.level AS ENUM ('low', 'high')",
            f"CREATE DOMAIN {s4}.level_d AS {s7}.level NOT NULL",
            f"CREATE TABLE {s5}.catalog (id int PRIMARY KEY, title text)",
            f"INSERT INTO {s5}.catalog VALUES (1, 'a'), (2, 'b')",
            f"CREATE TABLE {s6}.owner (id int PRIMARY KEY)",
            f"INSERT INTO {s6}.owner VALUES (7)",
            f"CREATE SCHEMA {K}",
            f"""CREATE TABLE {K}.thing (
                n bigint DEFAULT nextval('{s1}.seq'), code text DEFAULT {s2}.code(), level {s4}.level_d,
                owner_id int REFERENCES {s6}.owner (id))""",
            f"CREATE TRIGGER thing_stamp BEFORE INSERT ON {K}.thing FOR EACH ROW EXECUTE FUNCTION {s3}.stamp()",
            f"CREATE VIEW {K}.titles AS SELECT title FROM {s5}.catalog",
            f"INSERT INTO {K}.thing (level, owner_id) VALUES ('low', 7), ('high', 7)",
        )
        yield
    finally:
        _run_sql(f"DROP SCHEMA IF EXISTS {K} CASCADE", *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in SHARED))


def test_each_kind_of_dependency_names_its_schema(tenant_using_many_schemas, scratch_db, tmp_path):
    with pgtools.connect() as conn:
        found = dependencies_outside(conn, K)
    assert found.schemas == SHARED
    assert found.fk_tables == [("tb_dep_s6", "owner")]
    dump = str(tmp_path / "tenant.dump")
    _dump(K, dump)
    prepare_scratch(scratch_db, K)
    loaded = _load(scratch_db, dump)
    assert loaded.returncode == 0, loaded.stderr
    with pgtools.connect(dbname=scratch_db) as scratch:
        assert scratch.execute(f"SELECT count(*) FROM {K}.thing").fetchone()[0] == 2
        assert scratch.execute(f"SELECT count(*) FROM {K}.titles").fetchone()[0] == 0


def test_backup_loads_into_a_prepared_scratch_with_rows_and_foreign_keys(tenant_using_public, scratch_db, tmp_path):
    before = _scratch_files()
    dump = str(tmp_path / "tenant.dump")
    _dump(T, dump)
    prepare_scratch(scratch_db, T)
    assert _scratch_files() == before
    loaded = _load(scratch_db, dump)
    assert loaded.returncode == 0, loaded.stderr
    with pgtools.connect() as live, pgtools.connect(dbname=scratch_db) as scratch:
        assert _fingerprint(scratch) == _fingerprint(live)
        assert scratch.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated "
            f"AND conrelid = '{T}.item'::regclass").fetchone()[0] == 2
        assert scratch.execute(f"SELECT count(*) FROM pg_trigger WHERE tgrelid = '{T}.item'::regclass "
                               "AND NOT tgisinternal").fetchone()[0] == 1
        assert scratch.execute("SELECT count(*) FROM public.tb_dep_ref").fetchone()[0] == 3
        assert scratch.execute("SELECT to_regclass('public.tb_dep_tv'), to_regclass('public.tb_dep_tpub')"
                               ).fetchone() == (None, None)
        scratch.execute(f"INSERT INTO {T}.item (qty, clinica_id) VALUES (1, {tenant_using_public})")
        assert scratch.execute(f"SELECT note FROM {T}.item WHERE ref_id IS NULL").fetchone()[0] == "audited"


def test_backup_fails_in_the_scratch_when_a_referenced_row_is_gone_from_live(tenant_using_public, scratch_db,
                                                                             tmp_path):
    dump = str(tmp_path / "tenant.dump")
    _dump(T, dump)
    _run_sql(f"DELETE FROM {T}.item WHERE ref_id = 2", "DELETE FROM public.tb_dep_ref WHERE id = 2")
    prepare_scratch(scratch_db, T)
    loaded = _load(scratch_db, dump)
    assert loaded.returncode != 0
    assert "violates foreign key constraint" in loaded.stderr
    assert "item_ref_id_fkey" in loaded.stderr
