"""The dispatcher: claim every due tenant once, create one record per (tenant, slot), fan out after commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups import conf
from backups.models import BackupEvent, BackupRecord
from backups.naming import backup_file_name, tenant_key
from backups.scheduling import DISABLED, SCHEDULED

from .enqueue import backups_enqueue
from .records import backup_record_next_free_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    """What one tick did."""

    records: list[BackupRecord]
    claimed: int
    skipped_unmigrated: list[str]
    broken: dict[str, str] = field(default_factory=dict)  # schema -> why it could not be scheduled


def migrated_schemas(schemas: list[str]) -> set[str]:
    """Schemas that exist and hold a django_migrations table (a tenant created a moment ago may not)."""
    if not schemas:
        return set()
    with connection.cursor() as cur:  # to_regclass per due schema: cost follows the due count, not all schemas
        cur.execute(
            "SELECT s FROM unnest(%s::text[]) AS s WHERE to_regclass(format('%%I.django_migrations', s)) IS NOT NULL",
            (schemas,),
        )
        return {row[0] for row in cur.fetchall()}


def _insert_events(records: list[BackupRecord], now: datetime) -> None:
    """One set-based INSERT of the 'create' audit events (bulk_create costs ~0.3 ms of Python per row)."""
    if not records:
        return
    table = connection.ops.quote_name(BackupEvent._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (record_id, tenant_id, tenant_uid, schema_name, action, actor, details, created_at) "
            "SELECT u.r, u.t, u.uid, u.s, %s, %s::jsonb, jsonb_build_object('slot', u.slot), %s "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::uuid[], %s::text[], %s::text[]) AS u(r, t, uid, s, slot)",
            [BackupEvent.Action.CREATE, '{"scheduler": true}', now, [r.pk for r in records],
             [r.tenant_id for r in records], [r.tenant_uid for r in records], [r.schema_name for r in records],
             [r.slot.isoformat() for r in records]],
        )


def _advance(tenants: list) -> None:
    """One set-based UPDATE of the claimed tenants (bulk_update's CASE WHEN costs ~0.5 ms of Python per row)."""
    if not tenants:
        return
    meta = tenants[0]._meta
    table, pk = connection.ops.quote_name(meta.db_table), connection.ops.quote_name(meta.pk.column)
    pk_type = meta.pk.rel_db_type(connection)
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {table} AS t SET backup_schedule = u.schedule, next_backup_at = u.next_at "
            f"FROM unnest(%s::{pk_type}[], %s::text[], %s::timestamptz[]) AS u(id, schedule, next_at) "
            f"WHERE t.{pk} = u.id",
            [[t.pk for t in tenants], [t.backup_schedule for t in tenants], [t.next_backup_at for t in tenants]],
        )


def _automatic_record(tenant, slot: datetime, fmt: str, compression: str, backend: str,
                      encryption: str) -> BackupRecord:
    name = backup_file_name(schema=tenant.schema_name, fmt=fmt, compression=compression, automatic=True, at=slot,
                            encryption=encryption)
    return BackupRecord(
        tenant=tenant, tenant_uid=tenant.tenant_uid, schema_name=tenant.schema_name, file_name=name,
        storage_backend=backend, storage_key=tenant_key(tenant.schema_name, tenant.tenant_uid, name), format=fmt,
        compression=compression, encryption=encryption,
        backup_type=BackupRecord.Type.AUTOMATIC, slot=slot, requested_by={"scheduler": True},
    )


def _give_distinct_keys(records: list[BackupRecord], backend: str) -> None:
    """A key another record already has (one query on the unique index) gets the next free -N suffix.

    Slots are whole seconds in practice, but a schedule edited twice within one second, or next_backup_at
    set by hand, can give one tenant two slots in the same second: one duplicate key would otherwise fail
    the whole tick for every tenant.
    """
    used = set(BackupRecord.objects.filter(storage_backend=backend, storage_key__in=[r.storage_key for r in records])
               .values_list("storage_key", flat=True)) if records else set()
    seen: set[str] = set()
    for record in records:
        if record.storage_key in used or record.storage_key in seen:
            backup_record_next_free_name(record=record, used=used | seen)
        seen.add(record.storage_key)


def dispatch_due_backups(*, now: datetime | None = None, enqueue: bool = True) -> Dispatch:
    """One tick: in one transaction, claim due tenants (FOR UPDATE SKIP LOCKED), record their slot, advance them.

    A second dispatcher running at the same moment skips the rows this one holds and, once it commits,
    finds them no longer due, so each slot gets one record. Slots missed while nothing ticked collapse
    into one backup, because the next slot is computed after `now`, not after the missed one.
    """
    now = now or timezone.now()
    Tenant = get_tenant_model()
    fmt, compression = conf.get("BACKUPS_DEFAULT_FORMAT"), conf.get("BACKUPS_COMPRESSION")
    backend = conf.get("BACKUPS_STORAGE")
    encryption = conf.default_encryption()
    with transaction.atomic():
        due = list(
            Tenant.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(next_backup_at__lte=now)
            .exclude(backup_schedule=DISABLED)
            .exclude(schema_name=get_public_schema_name())
            .order_by("next_backup_at")[: conf.get("BACKUPS_DISPATCH_BATCH")]
        )
        ready_schemas = migrated_schemas([t.schema_name for t in due])
        ready = [t for t in due if t.schema_name in ready_schemas]
        skipped = sorted(t.schema_name for t in due if t.schema_name not in ready_schemas)
        taken = set(
            BackupRecord.objects.filter(tenant__in=ready, slot__in={t.next_backup_at for t in ready})
            .values_list("tenant_id", "slot")
        )
        records, advanced, broken = [], [], {}
        for tenant in ready:
            # one tenant's bad row (a time zone or schema name set behind validation's back) must not stop the tick
            try:
                record = None if (tenant.pk, tenant.next_backup_at) in taken else _automatic_record(
                    tenant, tenant.next_backup_at, fmt, compression, backend, encryption)
                following = None if tenant.backup_schedule == SCHEDULED else tenant.compute_next_backup_at(after=now)
            except Exception as exc:  # noqa: BLE001 - reported below; the tenant stays due, so it shows as overdue
                broken[tenant.schema_name] = f"{type(exc).__name__}: {exc}"
                continue
            if record is not None:
                records.append(record)
            if tenant.backup_schedule == SCHEDULED:
                tenant.backup_schedule = DISABLED
            tenant.next_backup_at = following
            advanced.append(tenant)
        _give_distinct_keys(records, backend)
        BackupRecord.objects.bulk_create(records)
        _insert_events(records, now)
        _advance(advanced)
        if enqueue:
            backups_enqueue(records)
    for schema, error in broken.items():
        logger.error("dispatcher skipped tenant %s, which stays due: %s", schema, error)
    if skipped:
        logger.info("skipped %d tenants whose schema is not migrated yet: %s", len(skipped), ", ".join(skipped[:20]))
    return Dispatch(records=records, claimed=len(due), skipped_unmigrated=skipped, broken=broken)
