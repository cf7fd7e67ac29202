"""Read-only questions ops ask across tenants, answered from the public schema alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import OperationalError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.conf import backups_settings
from backups.core.timetable import DISABLED
from backups.models import BackupRecord

ESTIMATE_LOCK_WAIT_MS = 200  # how long a progress estimate may wait for a table's lock

STALLED = "stalled"
FAILING = "failing"
STUCK = "stuck"


@dataclass(frozen=True)
class OverdueTenant:
    """A tenant whose automatic backups are behind, and why."""

    tenant_id: int
    schema_name: str
    reason: str  # STALLED, FAILING or STUCK
    due_at: datetime  # the slot that was not backed up in time
    last_backup_at: datetime | None
    error: str = ""

    def describe(self) -> str:
        """One line for a log, a mail or a terminal."""
        last = self.last_backup_at.isoformat(timespec="seconds") if self.last_backup_at else "never"
        due = self.due_at.isoformat(timespec="seconds")
        if self.reason == STALLED:
            why = f"due at {due} and not started (is beat running? the dispatcher logs any tenant it skips)"
        elif self.reason == STUCK:
            why = f"the backup due at {due} has not finished (are workers on backups.dump running?)"
        else:
            why = f"the backup due at {due} failed: {self.error.splitlines()[0] if self.error else 'no message'}"
        return f"{self.schema_name}: {why}; last success {last}"


def overdue_tenants(*, now: datetime | None = None, grace_seconds: int | None = None) -> list[OverdueTenant]:
    """Tenants with a schedule whose newest slot, older than the grace period, has no successful backup.

    Three ways to fall behind, all found by one query over indexed columns: nobody claimed the slot
    (next_backup_at long past: beat or the dispatch workers are down), the slot's backup failed, or it is
    still queued or running after the grace period (no dump workers, or a stuck one).
    """
    now = now or timezone.now()
    grace = backups_settings.BACKUPS_OVERDUE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = now - timedelta(seconds=int(grace))
    meta = get_tenant_model()._meta
    tenants, pk = connection.ops.quote_name(meta.db_table), connection.ops.quote_name(meta.pk.column)
    records = connection.ops.quote_name(BackupRecord._meta.db_table)
    # One LATERAL probe of the (tenant, slot) index per scheduled tenant: three correlated subqueries (the
    # ORM's annotate) cost 3x that (bench/bench_dispatch.py measures it over 100,000 tenants).
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT t.{pk}, t.schema_name, t.next_backup_at, t.last_backup_at, r.slot, r.status, r.error "
            f"FROM {tenants} t LEFT JOIN LATERAL (SELECT slot, status, error FROM {records} "
            f"  WHERE tenant_id = t.{pk} AND backup_type = %s AND slot IS NOT NULL ORDER BY slot DESC LIMIT 1) r "
            "ON true WHERE t.backup_schedule <> %s AND t.schema_name <> %s "
            "AND (t.next_backup_at < %s OR (r.slot < %s AND r.status <> %s)) ORDER BY t.schema_name",
            [BackupRecord.Type.AUTOMATIC, DISABLED, get_public_schema_name(), cutoff, cutoff,
             BackupRecord.Status.SUCCEEDED],
        )
        columns = ("pk", "schema_name", "next_backup_at", "last_backup_at", "newest_slot", "newest_status",
                   "newest_error")
        rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    found = []
    for row in rows:
        if row["next_backup_at"] is not None and row["next_backup_at"] < cutoff:
            reason, due_at, error = STALLED, row["next_backup_at"], ""
        elif row["newest_status"] == BackupRecord.Status.FAILED:
            reason, due_at, error = FAILING, row["newest_slot"], row["newest_error"] or ""
        elif row["newest_status"] in (BackupRecord.Status.QUEUED, BackupRecord.Status.RUNNING):
            reason, due_at, error = STUCK, row["newest_slot"], ""
        else:
            continue
        found.append(OverdueTenant(tenant_id=row["pk"], schema_name=row["schema_name"], reason=reason,
                                   due_at=due_at, last_backup_at=row["last_backup_at"], error=error))
    return found


def schema_exists(schema: str) -> bool:
    """Whether the database has this schema."""
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema])
        return cur.fetchone() is not None


def schema_relation_bytes(schema: str) -> int:
    """Bytes of the schema's tables, indexes and TOAST, for a progress estimate; never waits on a lock.

    pg_total_relation_size opens each table, so behind a migration's ACCESS EXCLUSIVE lock it would wait, and a
    backup would sit before its dump on an estimate; after ESTIMATE_LOCK_WAIT_MS the catalog's page counts (as of
    the last VACUUM/ANALYZE, no lock) answer instead."""
    try:
        # set_config(..., true) in a savepoint, put back after: a caller's own transaction keeps its lock_timeout
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT current_setting('lock_timeout'), set_config('lock_timeout', %s, true)",
                        [f"{ESTIMATE_LOCK_WAIT_MS}ms"])
            previous = cur.fetchone()[0]
            cur.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                [schema])
            size = int(cur.fetchone()[0])
            cur.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
            return size
    except OperationalError:  # lock_timeout: someone holds a table of the schema exclusively
        pass
    with connection.cursor() as cur:
        cur.execute(
            "SELECT COALESCE(SUM(c.relpages::bigint + COALESCE(t.relpages, 0)), 0) "
            "* current_setting('block_size')::int "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_class t ON t.oid = c.reltoastrelid "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm', 'i')", [schema])
        return int(cur.fetchone()[0])
