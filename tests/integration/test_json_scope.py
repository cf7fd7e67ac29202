"""What a json backup does not hold: a demo tenant holds nothing beyond its models; anything added is named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from backups.postgres.json_scope import json_restore_refusal, objects_outside_models

SCHEMA = "clinica_sonrisa"

EXTRA_SQL = f"""
CREATE TABLE {SCHEMA}.public_stats (id serial PRIMARY KEY, visits integer NOT NULL DEFAULT 0);
CREATE VIEW {SCHEMA}.v_patients AS SELECT id, nombre FROM {SCHEMA}.clinic_patient;
CREATE FUNCTION {SCHEMA}.touch_stats(n integer) RETURNS integer LANGUAGE sql
    AS $$ UPDATE {SCHEMA}.public_stats SET visits = visits + n RETURNING visits $$;
CREATE FUNCTION {SCHEMA}.stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER patient_stamp BEFORE UPDATE ON {SCHEMA}.clinic_patient
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.stamp();
CREATE SEQUENCE {SCHEMA}.invoice_numbers;
CREATE TYPE {SCHEMA}.mood AS ENUM ('calm', 'anxious');
"""

DROP_SQL = f"""
DROP TRIGGER IF EXISTS patient_stamp ON {SCHEMA}.clinic_patient;
DROP FUNCTION IF EXISTS {SCHEMA}.stamp();
DROP FUNCTION IF EXISTS {SCHEMA}.touch_stats(integer);
DROP VIEW IF EXISTS {SCHEMA}.v_patients;
DROP TABLE IF EXISTS {SCHEMA}.public_stats;
DROP SEQUENCE IF EXISTS {SCHEMA}.invoice_numbers;
DROP TYPE IF EXISTS {SCHEMA}.mood;
"""


@pytest.fixture
def extra_objects() -> Iterator[None]:
    with connection.cursor() as cur:
        cur.execute(EXTRA_SQL)
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute(DROP_SQL)


def test_a_demo_tenant_holds_nothing_beyond_its_models():
    assert objects_outside_models(SCHEMA) == []
    assert json_restore_refusal(SCHEMA) is None


def test_added_objects_are_named_and_refuse_a_json_replace(extra_objects):
    found = objects_outside_models(SCHEMA)
    assert sorted(found) == sorted([
        "table public_stats", "view v_patients", "sequence invoice_numbers", "type mood",
        "function stamp()", "function touch_stats(n integer)", "trigger patient_stamp on table clinic_patient",
    ])
    refusal = json_restore_refusal(SCHEMA)
    assert refusal.startswith("The live schema holds objects a json backup does not carry (")
    assert "table public_stats" in refusal and "trigger patient_stamp on table clinic_patient" in refusal
    assert refusal.endswith("a json replace would drop them. Restore a sql or dump backup instead.")


def test_the_refusal_names_ten_objects_and_counts_the_rest(extra_objects):
    with connection.cursor() as cur:
        for i in range(6):
            cur.execute(f"CREATE VIEW {SCHEMA}.v_extra_{i} AS SELECT 1 AS one")
    try:
        refusal = json_restore_refusal(SCHEMA)
    finally:
        with connection.cursor() as cur:
            for i in range(6):
                cur.execute(f"DROP VIEW {SCHEMA}.v_extra_{i}")
    assert refusal.count(", ") == 9 and "and 3 more" in refusal
