"""Helpers shared by the integration tests: fingerprints of a schema's data."""

from __future__ import annotations

from django.db import connection

from backups.pgtools import quote_ident


def schema_tables(schema: str) -> list[str]:
    """Ordinary tables of a schema."""
    with connection.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))
        return [r[0] for r in cur.fetchall()]


def table_fingerprints(schema: str, tables: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of every row's text, per table: equal fingerprints mean equal data."""
    out = {}
    with connection.cursor() as cur:
        for table in tables or schema_tables(schema):
            cur.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                f"FROM {quote_ident(schema)}.{quote_ident(table)} t"
            )
            out[table] = tuple(cur.fetchone())
    return out


DEMO_TABLES = ["accounts_user", "clinic_patient", "clinic_appointment", "clinic_treatment", "clinic_invoice"]
