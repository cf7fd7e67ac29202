"""Read-only questions ops ask across tenants, answered from the public schema alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups import conf
from backups.models import BackupRecord
from backups.scheduling import DISABLED

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

    Three ways to fall behind, each found by one query over indexed columns: nobody claimed the slot
    (next_backup_at long past: beat or the dispatch workers are down), the slot's backup failed, or it is
    still queued or running after the grace period (no dump workers, or a stuck one).
    """
    now = now or timezone.now()
    grace = conf.get("BACKUPS_OVERDUE_GRACE_SECONDS") if grace_seconds is None else grace_seconds
    cutoff = now - timedelta(seconds=int(grace))
    Tenant = get_tenant_model()
    scheduled = Tenant.objects.exclude(backup_schedule=DISABLED).exclude(schema_name=get_public_schema_name())
    newest = BackupRecord.objects.filter(tenant=OuterRef("pk"), backup_type=BackupRecord.Type.AUTOMATIC,
                                         slot__isnull=False).order_by("-slot")
    rows = (
        scheduled.annotate(
            newest_slot=Subquery(newest.values("slot")[:1]),
            newest_status=Subquery(newest.values("status")[:1]),
            newest_error=Subquery(newest.values("error")[:1]),
        )
        .filter(Q(next_backup_at__lt=cutoff)
                | (Q(newest_slot__lt=cutoff) & ~Q(newest_status=BackupRecord.Status.SUCCEEDED)))
        .order_by("schema_name")
        .values("pk", "schema_name", "next_backup_at", "last_backup_at", "newest_slot", "newest_status",
                "newest_error")
    )
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
