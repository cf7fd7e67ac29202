"""Prometheus metrics of the whole fleet, read from the catalog and the broker when Prometheus scrapes.

Nothing is counted in process memory: every web process answers the same numbers, taken at scrape time
from the public schema (four queries whatever the number of tenants: the per-tenant figures come from one
LATERAL probe of the (tenant_uid, created_at) index per tenant, as the overdue check does) and from one
pipelined round trip to the broker's Redis. A catalog or broker outage is reported as `backups_catalog_up 0`
/ `backups_broker_up 0` with the rest of the answer, never as a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from backups.catalog.copies import newest_backup_targets
from backups.catalog.selectors import FAILING, STALLED, STUCK, overdue_tenants
from backups.conf import backups_settings
from backups.core.timetable import DISABLED
from backups.models import BackupCopy, BackupRecord, RestoreJob
from backups.ops import broker

logger = logging.getLogger(__name__)


def _tenant_rows(*, since) -> list[tuple]:
    """(schema, schedule, last success finished_at, started_at, size, failures since it, failures since `since`)
    for every tenant but the public one, in one statement."""
    meta = get_tenant_model()._meta
    q = connection.ops.quote_name
    tenants, records = q(meta.db_table), q(BackupRecord._meta.db_table)
    failed, succeeded = BackupRecord.Status.FAILED, BackupRecord.Status.SUCCEEDED
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT t.schema_name, t.backup_schedule, s.finished_at, s.started_at, s.size, "
            f"  (SELECT count(*) FROM {records} f WHERE f.tenant_uid = t.tenant_uid AND f.status = %s "
            f"     AND f.created_at > COALESCE(s.created_at, '-infinity'::timestamptz)), "
            f"  (SELECT count(*) FROM {records} f WHERE f.tenant_uid = t.tenant_uid AND f.status = %s "
            f"     AND f.created_at >= %s) "
            f"FROM {tenants} t LEFT JOIN LATERAL (SELECT finished_at, started_at, size, created_at FROM {records} "
            f"  WHERE tenant_uid = t.tenant_uid AND status = %s AND damaged_at IS NULL "
            f"  ORDER BY created_at DESC LIMIT 1) s ON true "
            f"WHERE t.schema_name <> %s ORDER BY t.schema_name",
            [failed, failed, since, succeeded, get_public_schema_name()],
        )
        return cur.fetchall()


class BackupsCollector:
    """A prometheus_client custom collector: each collect() reads the catalog and the broker afresh."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        yield from self._catalog()
        yield from self._broker()
        yield GaugeMetricFamily("backups_scrape_duration_seconds", "Time this scrape took to read the catalog "
                                "and the broker.", value=time.monotonic() - started)

    def _catalog(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("backups_catalog_up", "1 when the catalog (the public schema) answered this scrape.")
        try:
            families = self._catalog_families()
        except DatabaseError as exc:
            logger.warning("metrics: the catalog did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _catalog_families(self) -> list[Metric]:
        now = timezone.now()
        timeout_ms = int(backups_settings.BACKUPS_METRICS_STATEMENT_TIMEOUT_SECONDS * 1000)
        with transaction.atomic():
            with connection.cursor() as cur:
                # JIT compiling the per-tenant probes costs ~5x their run time (300 ms at 10,000 tenants)
                cur.execute("SELECT set_config('statement_timeout', %s, true), set_config('jit', 'off', true)",
                            [str(timeout_ms)])
            rows = _tenant_rows(since=now - timedelta(hours=24))
            active = list(BackupRecord.objects.active().values("status")
                          .annotate(n=Count("pk")).order_by())
            restores = list(RestoreJob.objects.active().values("mode", "status")
                            .annotate(n=Count("pk")).order_by())
            overdue = overdue_tenants(now=now)
            uids = dict(get_tenant_model().objects.exclude(schema_name=get_public_schema_name())
                        .values_list("tenant_uid", "schema_name"))
            targets_by_uid = newest_backup_targets(list(uids))
            copies = dict(BackupCopy.objects.values_list("status").annotate(n=Count("pk")).order_by())

        labels = ["tenant"]
        last_at = GaugeMetricFamily("backups_last_success_timestamp_seconds",
                                    "When the tenant's newest successful backup finished (Unix time).", labels=labels)
        last_duration = GaugeMetricFamily("backups_last_success_duration_seconds",
                                          "How long the tenant's newest successful backup ran.", labels=labels)
        last_size = GaugeMetricFamily("backups_last_success_size_bytes",
                                      "Stored bytes of the tenant's newest successful backup.", labels=labels)
        consecutive = GaugeMetricFamily("backups_consecutive_failures",
                                        "Failed backups of the tenant since its newest successful one.", labels=labels)
        recent = GaugeMetricFamily("backups_failures_24h", "Failed backups of the tenant created in the last 24 h.",
                                   labels=labels)
        tenants = GaugeMetricFamily("backups_tenants", "Tenants (the public one aside), by whether they have an "
                                    "automatic schedule.", labels=["schedule"])
        scheduled = 0
        for schema, schedule, finished_at, started_at, size, failures, failures_24h in rows:
            scheduled += schedule != DISABLED
            if finished_at is not None:
                last_at.add_metric([schema], finished_at.timestamp())
                if started_at is not None:
                    last_duration.add_metric([schema], (finished_at - started_at).total_seconds())
                if size is not None:
                    last_size.add_metric([schema], size)
            consecutive.add_metric([schema], failures)
            recent.add_metric([schema], failures_24h)
        tenants.add_metric(["enabled"], scheduled)
        tenants.add_metric(["disabled"], len(rows) - scheduled)

        by_reason = {STALLED: 0, FAILING: 0, STUCK: 0}
        for item in overdue:
            by_reason[item.reason] = by_reason.get(item.reason, 0) + 1
        overdue_family = GaugeMetricFamily(
            "backups_overdue_tenants", "Tenants whose newest automatic slot, older than BACKUPS_OVERDUE_GRACE_SECONDS, "
            "has no successful backup: stalled (never started), failing, stuck (still queued or running).",
            labels=["reason"])
        for reason, n in sorted(by_reason.items()):
            overdue_family.add_metric([reason], n)

        in_progress = GaugeMetricFamily("backups_in_progress", "Backups, replace restores and verify drills queued or "
                                        "running now.",
                                        labels=["kind", "status"])
        kinds = {RestoreJob.Mode.REPLACE: "restore", RestoreJob.Mode.VERIFY: "verify"}
        counts = {("backup", status): 0 for status in BackupRecord.ACTIVE_STATUSES}
        counts.update({(kind, status): 0 for kind in kinds.values() for status in RestoreJob.ACTIVE_STATUSES})
        for row in active:
            counts["backup", row["status"]] = row["n"]
        for row in restores:
            counts[kinds.get(row["mode"], row["mode"]), row["status"]] = row["n"]
        for (kind, status), n in sorted(counts.items()):
            in_progress.add_metric([kind, status], n)
        targets = GaugeMetricFamily(
            "backups_newest_backup_targets", "How many targets (the primary, the second target BACKUPS_COPY_STORAGE) "
            "hold the tenant's newest successful backup, checked: 2 is the goal with a copy target, 0 means none.",
            labels=labels)
        for uid, n in targets_by_uid.items():
            targets.add_metric([uids[uid]], n)
        copy_family = GaugeMetricFamily("backups_copies", "Backup copies in the second target, by status (failed "
                                        "ones are retried by the reaper's pass, then alerted).", labels=["status"])
        for status in BackupCopy.Status.values:
            copy_family.add_metric([status], copies.get(status, 0))
        return [last_at, last_duration, last_size, consecutive, recent, tenants, overdue_family, in_progress, targets,
                copy_family]

    def _broker(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("backups_broker_up", "1 when the broker's Redis answered this scrape.")
        url = broker.broker_url()
        if not broker.is_redis(url):
            return  # queue depths are read from Redis lists; other brokers have their own exporters
        try:
            client = broker.redis_client(timeout=backups_settings.BACKUPS_HEALTH_TIMEOUT_SECONDS)
            try:
                depths, unacked = broker.queue_depths(client)
            finally:
                client.close()
        except Exception as exc:  # redis errors, DNS, refused: the catalog's figures still go out
            logger.warning("metrics: the broker did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queued = GaugeMetricFamily("backups_queue_messages", "Messages waiting in each Celery queue (all priorities).",
                                   labels=["queue"])
        for queue, depth in sorted(depths.items()):
            queued.add_metric([queue], depth)
        yield queued
        yield GaugeMetricFamily("backups_broker_unacked_messages", "Messages delivered to a worker and not yet "
                                "acknowledged (running or prefetched tasks, with acks_late).", value=unacked)


_registry: CollectorRegistry | None = None


def registry() -> CollectorRegistry:
    """The registry /metrics answers from: the backups collector alone (process metrics differ per worker)."""
    global _registry
    if _registry is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(BackupsCollector())
        _registry = reg
    return _registry


def render() -> bytes:
    """The text exposition format of every backups metric, read now."""
    return generate_latest(registry())
