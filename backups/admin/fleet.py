"""What the admin dashboard shows, read from the catalog with a fixed number of aggregate queries.

Nothing here loops over tenants in Python or runs one query per tenant: the fleet status is one
LATERAL probe of the (tenant_uid, -created_at) index per tenant inside a single statement, the daily
trends and the largest tenants are GROUP BYs over one window of the (status, created_at) index, and
the per-tenant history reads one tenant's rows through its index. The number of queries is the same
for 10 tenants and for 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db import connection
from django.db.models import Count, F, Max
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups.catalog.selectors import OverdueTenant, overdue_tenants
from backups.core.timetable import DISABLED
from backups.models import BackupRecord

S = BackupRecord.Status


@dataclass(frozen=True)
class FleetStatus:
    """Tenants by the outcome of their newest finished backup, plus what is overdue and running now."""

    tenants: int
    scheduled: int
    succeeded: int  # tenants whose newest finished backup succeeded
    failed: int  # tenants whose newest finished backup failed
    never: int  # tenants with no finished backup at all
    overdue: list[OverdueTenant]
    running: int
    queued: int
    last_24h: dict[str, int] = field(default_factory=dict)  # records finished in the last 24 h, by status


@dataclass(frozen=True)
class DayStats:
    """One day of the whole fleet's backups."""

    day: date
    succeeded: int
    failed: int
    stored_bytes: int
    avg_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class TenantTrend:
    """One tenant's successful backups over the window, oldest first: (finished_at, size, seconds)."""

    schema_name: str
    tenant_uid: str
    tenant_id: int | None
    points: list[tuple[datetime, int | None, float | None]]

    @property
    def latest_size(self) -> int | None:
        return self.points[-1][1] if self.points else None

    @property
    def latest_seconds(self) -> float | None:
        return self.points[-1][2] if self.points else None


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def fleet_status(*, now: datetime | None = None) -> FleetStatus:
    """The tiles at the top of the dashboard."""
    now = now or timezone.now()
    meta = get_tenant_model()._meta
    tenants, records = _q(meta.db_table), _q(BackupRecord._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT count(*), count(*) FILTER (WHERE t.backup_schedule <> %s), "
            f"count(*) FILTER (WHERE r.status = %s), count(*) FILTER (WHERE r.status = %s), "
            f"count(*) FILTER (WHERE r.status IS NULL) "
            f"FROM {tenants} t LEFT JOIN LATERAL (SELECT status FROM {records} "
            f"  WHERE tenant_uid = t.tenant_uid AND status IN (%s, %s) ORDER BY created_at DESC LIMIT 1) r "
            f"ON true WHERE t.schema_name <> %s",
            [DISABLED, S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.FAILED, get_public_schema_name()],
        )
        total, scheduled, succeeded, failed, never = cur.fetchone()
    active = dict(BackupRecord.objects.active()
                  .values_list("status").annotate(n=Count("id")).order_by())
    since = now - timedelta(hours=24)
    last_24h = dict(BackupRecord.objects.finished().filter(created_at__gte=since - timedelta(hours=24),
                                                           finished_at__gte=since)
                    .values_list("status").annotate(n=Count("id")).order_by())
    return FleetStatus(tenants=total, scheduled=scheduled, succeeded=succeeded, failed=failed, never=never,
                       overdue=overdue_tenants(now=now), running=active.get(S.RUNNING, 0),
                       queued=active.get(S.QUEUED, 0),
                       last_24h={s: last_24h.get(s, 0) for s in BackupRecord.FINISHED_STATUSES})


def fleet_days(*, days: int, now: datetime | None = None) -> list[DayStats]:
    """Per day (UTC) of the last `days`: backups that succeeded and failed, bytes stored, mean and p95 duration."""
    now = now or timezone.now()
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    records = _q(BackupRecord._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT (created_at AT TIME ZONE 'UTC')::date AS day, "
            f"count(*) FILTER (WHERE status = %s), count(*) FILTER (WHERE status = %s), "
            f"COALESCE(sum(size) FILTER (WHERE status = %s), 0), "
            f"avg(extract(epoch FROM finished_at - started_at)) FILTER (WHERE status = %s), "
            f"percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)) "
            f"  FILTER (WHERE status = %s) "
            f"FROM {records} WHERE status IN (%s, %s) AND created_at >= %s GROUP BY 1 ORDER BY 1",
            [S.SUCCEEDED, S.FAILED, S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED, S.SUCCEEDED, S.FAILED, start],
        )
        found = {row[0]: row for row in cur.fetchall()}
    out = []
    for i in range(days):
        day = (start + timedelta(days=i)).date()
        row = found.get(day)
        if row is None:
            out.append(DayStats(day, 0, 0, 0, None, None))
        else:
            out.append(DayStats(day, row[1], row[2], int(row[3]), _float(row[4]), _float(row[5])))
    return out


def _float(value) -> float | None:
    return None if value is None else float(value)


def largest_tenants(*, days: int, limit: int = 10, now: datetime | None = None) -> list[TenantTrend]:
    """The `limit` tenants with the largest successful backup in the window, each with its history."""
    now = now or timezone.now()
    since = now - timedelta(days=days)
    top = list(BackupRecord.objects.filter(status=S.SUCCEEDED, created_at__gte=since, tenant__isnull=False)
               .values("tenant_uid").annotate(biggest=Max("size")).order_by(F("biggest").desc(nulls_last=True))
               .values_list("tenant_uid", flat=True)[:limit])
    return _trends(tenant_uids=top, since=since)


def tenant_trend(*, schema_name: str, days: int, now: datetime | None = None) -> TenantTrend | None:
    """One live tenant's successful backups over the window (None if no such tenant)."""
    now = now or timezone.now()
    tenant = (get_tenant_model().objects.filter(schema_name=schema_name).exclude(schema_name=get_public_schema_name())
              .values("tenant_uid").first())
    if tenant is None:
        return None
    found = _trends(tenant_uids=[tenant["tenant_uid"]], since=now - timedelta(days=days))
    return found[0] if found else TenantTrend(schema_name, str(tenant["tenant_uid"]), None, [])


def _trends(*, tenant_uids: list, since: datetime) -> list[TenantTrend]:
    if not tenant_uids:
        return []
    rows = (BackupRecord.objects.filter(tenant_uid__in=tenant_uids, status=S.SUCCEEDED, created_at__gte=since)
            .order_by("created_at").values_list("tenant_uid", "schema_name", "tenant_id", "finished_at", "size",
                                                "started_at"))
    trends: dict = {uid: None for uid in tenant_uids}
    for uid, schema, tenant_id, finished, size, started in rows:
        trend = trends.get(uid)
        if trend is None:
            trend = trends[uid] = TenantTrend(schema, str(uid), tenant_id, [])
        seconds = (finished - started).total_seconds() if finished and started else None
        trend.points.append((finished, size, seconds))
    return [t for t in trends.values() if t is not None]


def recent_failures(*, hours: int = 24, limit: int = 50, now: datetime | None = None
                    ) -> tuple[int, list[BackupRecord]]:
    """Backups that failed in the last `hours`: how many, and the newest `limit` of them."""
    now = now or timezone.now()
    since = now - timedelta(hours=hours)
    failed = BackupRecord.objects.filter(status=S.FAILED, created_at__gte=since - timedelta(hours=24),
                                         finished_at__gte=since)
    rows = list(failed.order_by("-finished_at").only(
        "id", "schema_name", "file_name", "backup_type", "finished_at", "error", "attempts", "stage", "tenant_id")
        [:limit])
    return failed.count(), rows


def running_now(*, limit: int = 20) -> list[BackupRecord]:
    """Backups running now, oldest start first."""
    return list(BackupRecord.objects.filter(status=S.RUNNING).order_by("started_at", "id")[:limit])


def newest_targets(*, limit: int = 20) -> dict:
    """How many targets hold each tenant's newest backup: counts per number of targets, and the tenants short of
    the goal (2 with a copy target, else 1), fewest first; the failed copies' count."""
    from backups.catalog.copies import copies_failed_count, newest_backup_targets
    from backups.conf import backups_settings

    uids = dict(get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
                .values_list("tenant_uid", "schema_name"))
    targets = newest_backup_targets(list(uids))
    wanted = 2 if backups_settings.BACKUPS_COPY_STORAGE else 1
    counts: dict[int, int] = {}
    for n in targets.values():
        counts[n] = counts.get(n, 0) + 1
    short = sorted(((uids[uid], n) for uid, n in targets.items() if n < wanted), key=lambda item: (item[1], item[0]))
    return {"copy_target": backups_settings.BACKUPS_COPY_STORAGE, "wanted_targets": wanted,
            "targets_counts": sorted(counts.items(), reverse=True), "short_of_targets": short[:limit],
            "failed_copies_count": copies_failed_count() if wanted == 2 else 0}
