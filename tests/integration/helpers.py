"""Helpers shared by the integration tests: fingerprints of a schema's data."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from backups.models import BackupRecord
from backups.postgres.pgtools import quote_ident


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


def catalog_record(tenant, status: str, *, minutes_ago: float = 10, seconds: float = 2.5, size: int | None = 1529651,
                   **extra) -> BackupRecord:
    """A catalog row only (no stored object): finished `minutes_ago`, having run `seconds`."""
    now = timezone.now()
    finished = now - timedelta(minutes=minutes_ago) if status in ("succeeded", "failed") else None
    started = (finished or now) - timedelta(seconds=seconds) if status != "queued" else None
    record = BackupRecord.objects.create(
        tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=tenant.schema_name, storage_backend="local",
        file_name=f"backup-sql-{tenant.schema_name}-{status}-{minutes_ago}.sql.zst",
        storage_key=f"{tenant.schema_name}/{tenant.tenant_uid}/{status}-{minutes_ago}-{timezone.now().timestamp()}",
        status=status, size=size if status == "succeeded" else None, started_at=started, finished_at=finished,
        **extra)
    # created_at is auto_now_add: move it back to when the run started
    BackupRecord.objects.filter(pk=record.pk).update(created_at=started or now)
    return record
