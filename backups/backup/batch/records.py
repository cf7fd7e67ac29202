"""After-success moves for many batch members at once: a few statements per group instead of several per member.

The bulk twins of the chain's later links in backups.catalog.finalize (backup_record_finalize, retention_apply):
the same fields and deletions, written for a group of records. The bulk state moves (backup_records_mark_running,
backup_records_mark_succeeded) live with the single ones in backups.catalog.records, the owner of record
state, and are re-exported here. tests/integration/test_batch_backup.py compares what each
leaves with what the single-record functions leave, so a change to one that the other lacks fails there.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.catalog.finalize import retention_of
from backups.catalog.records import Success, backup_records_mark_running, backup_records_mark_succeeded  # noqa: F401 - re-export
from backups.models import BackupRecord

logger = logging.getLogger(__name__)

def backup_records_finalize(*, records: list[BackupRecord]) -> None:
    """backup_record_finalize for every succeeded record: the tenants' last_backup_at, forward only, one UPDATE."""
    rows = [(r.tenant_id, r.finished_at) for r in records
            if r.tenant_id is not None and r.status == BackupRecord.Status.SUCCEEDED]
    if not rows:
        return
    Tenant = get_tenant_model()
    table = connection.ops.quote_name(Tenant._meta.db_table)
    pk = connection.ops.quote_name(Tenant._meta.pk.column)
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {table} AS t SET last_backup_at = v.at "
            f"FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at) "
            f"WHERE t.{pk} = v.id AND (t.last_backup_at IS NULL OR t.last_backup_at < v.at)",
            ([tenant_id for tenant_id, _ in rows], [at for _, at in rows]))


def retention_apply_many(*, tenant_ids: list[int], now: datetime | None = None) -> list[int]:
    """retention_apply for every tenant: their records in one query, deletions only where a policy asks."""
    tenants = list(get_tenant_model().objects.filter(pk__in=set(tenant_ids)))
    if not tenants:
        return []
    by_uid = defaultdict(list)
    for record in BackupRecord.objects.filter(tenant_uid__in=[t.tenant_uid for t in tenants]):
        by_uid[record.tenant_uid].append(record)
    now = now or timezone.now()
    deleted = []
    for tenant in tenants:
        try:
            mine = retention_of(tenant, by_uid.get(tenant.tenant_uid, []), now=now)
        except Exception:  # noqa: BLE001 - retention runs again after the next backup; the backups stand
            logger.exception("retention of %s failed", tenant.schema_name)
            continue
        if mine:
            logger.info("retention deleted %d backups of %s", len(mine), tenant.schema_name)
        deleted += mine
    return deleted
