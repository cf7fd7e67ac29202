"""Record moves for many batch members at once: a few statements per group instead of several per member.

The bulk twins of backups.services.records (backup_record_mark_running, backup_record_mark_succeeded) and of
the chain's later links in backups.services.finalize (backup_record_finalize, retention_apply): the same fields,
events and deletions, written for a group of records. tests/integration/test_batch_backup.py compares what each
leaves with what the single-record functions leave, so a change to one that the other lacks fails there.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.models import BackupEvent, BackupRecord
from backups.retention import BackupInfo, backups_to_delete

from .finalize import backup_record_delete, retention_policy_for

logger = logging.getLogger(__name__)

SUCCEEDED_FIELDS = ["status", "finished_at", "size", "sha256", "plain_size", "plain_sha256", "bytes_done", "manifest",
                    "stage", "error"]


@dataclass
class Success:
    """A member whose object and manifest are stored and confirmed, waiting to be recorded."""

    record: BackupRecord
    size: int
    sha256: str
    plain_size: int
    plain_sha256: str
    manifest: dict
    finished_at: datetime


def backup_records_mark_running(*, records: list[BackupRecord], task_id: str = "") -> None:
    """backup_record_mark_running for every record, in one UPDATE."""
    if not records:
        return
    now = timezone.now()
    fields = {"status": BackupRecord.Status.RUNNING, "started_at": now, "finished_at": None, "error": "",
              "stage": "dumping", "bytes_done": 0}
    if task_id:
        fields["task_id"] = task_id
    BackupRecord.objects.filter(pk__in=[r.pk for r in records]).update(attempts=F("attempts") + 1, **fields)
    for record in records:
        for name, value in fields.items():
            setattr(record, name, value)
        record.attempts += 1


def backup_records_mark_succeeded(*, successes: list[Success]) -> None:
    """backup_record_mark_succeeded for every member: one UPDATE of the records, one INSERT of their events, in
    one transaction (a member is succeeded with its event, or neither)."""
    if not successes:
        return
    for s in successes:
        record = s.record
        record.status = BackupRecord.Status.SUCCEEDED
        record.finished_at = s.finished_at
        record.size, record.sha256 = s.size, s.sha256
        record.plain_size, record.plain_sha256 = s.plain_size, s.plain_sha256
        record.bytes_done = s.plain_size
        record.manifest = s.manifest
        record.stage = "done"
        record.error = ""
    events = [BackupEvent(record=s.record, tenant_id=s.record.tenant_id, tenant_uid=s.record.tenant_uid,
                          schema_name=s.record.schema_name, action=BackupEvent.Action.SUCCEED, actor={},
                          details={"size": s.size}) for s in successes]
    columns = {name: BackupRecord._meta.get_field(name).column for name in SUCCEEDED_FIELDS}
    q = connection.ops.quote_name
    sets = ", ".join(f"{q(col)} = v.{q(col)}" for col in columns.values())
    with transaction.atomic(), connection.cursor() as cur:
        # one UPDATE from arrays (Django's bulk_update builds a CASE per field and row, slow for jsonb)
        cur.execute(
            f"UPDATE {q(BackupRecord._meta.db_table)} AS r SET {sets} FROM unnest("
            "%s::bigint[], %s::text[], %s::timestamptz[], %s::bigint[], %s::text[], %s::bigint[], %s::text[], "
            "%s::bigint[], %s::jsonb[], %s::text[], %s::text[]) AS v(id, "
            + ", ".join(q(col) for col in columns.values()) + ") WHERE r.id = v.id RETURNING r.id",
            ([s.record.pk for s in successes], *([getattr(s.record, name) for s in successes]
                                                  for name in SUCCEEDED_FIELDS[:7]),
             [json.dumps(s.record.manifest, cls=DjangoJSONEncoder) for s in successes],
             [s.record.stage for s in successes], [s.record.error for s in successes]))
        updated = {row[0] for row in cur.fetchall()}
        if len(updated) != len(successes):  # a record deleted meanwhile: the others stand
            logger.warning("recording %d batch successes updated %d records", len(successes), len(updated))
        BackupEvent.objects.bulk_create([e for e in events if e.record_id in updated])


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
        records = by_uid.get(tenant.tenant_uid, [])
        # a damaged backup counts as a failure: it is no "newest good backup", and it stops deletion like one
        infos = [BackupInfo(id=r.pk, created_at=r.created_at, backup_type=r.backup_type,
                            status=BackupRecord.Status.FAILED if r.damaged_at else r.status) for r in records]
        try:
            doomed = backups_to_delete(infos, retention_policy_for(tenant), now=now,
                                       timezone=tenant.backup_timezone or "UTC")
            mine = []
            for record in records:
                if record.pk in doomed:
                    backup_record_delete(record=record, actor={"retention": True},
                                         action=BackupEvent.Action.RETENTION)
                    mine.append(record.pk)
        except Exception:  # noqa: BLE001 - retention runs again after the next backup; the backups stand
            logger.exception("retention of %s failed", tenant.schema_name)
            continue
        if mine:
            logger.info("retention deleted %d backups of %s", len(mine), tenant.schema_name)
        deleted += mine
    return deleted
