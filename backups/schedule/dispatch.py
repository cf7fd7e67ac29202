"""The dispatcher: claim every due tenant once, create one record per (tenant, slot), fan out after commit.

A tick is one statement that claims the due tenants (FOR UPDATE SKIP LOCKED, with each schema's readiness),
then one statement per 500 of them that inserts their records and 'create' events and advances them, sent in
psycopg's pipeline mode: the server inserts one chunk while Python names the next. Python computes only what
needs the calendar rules and the naming convention (next slots, file names), a schedule at a time.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, F, Func
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups import conf
from backups.backup.enqueue import backups_publish_on_commit
from backups.catalog.records import backup_record_next_free_name
from backups.conf import backups_settings
from backups.core.naming import backup_file_name, tenant_key
from backups.core.timetable import DISABLED, SCHEDULED, ScheduleSpec
from backups.models import BackupEvent, BackupRecord
from backups.schedule.times import next_backup_times

logger = logging.getLogger(__name__)

# what the claim reads of each due tenant, in this order
_CLAIMED = ("pk", "schema_name", "tenant_uid", "next_backup_at", "backup_schedule", "backup_time", "backup_weekday",
            "backup_day_of_month", "backup_timezone", "next_scheduled_backup")
# the record columns that differ per tenant; every other column takes the value a new automatic record has
class NewRow(NamedTuple):
    """A record the tick inserts: the columns that differ per tenant."""

    tenant_id: int
    tenant_uid: Any
    schema_name: str
    file_name: str
    storage_key: str
    slot: datetime


_PER_TENANT = NewRow._fields
# positions in a claimed row (plain tuples from values_list: a tick reads up to BACKUPS_DISPATCH_BATCH of them)
_ID, _SCHEMA, _UID, _DUE = 0, 1, 2, 3
_SCHEDULE_FIELDS = slice(4, 9)  # backup_schedule, backup_time, backup_weekday, backup_day_of_month, backup_timezone
_MIGRATED = -1
# tenants named and sent per statement: while the server inserts one chunk, Python names the next
_CHUNK = 500


@dataclass(frozen=True)
class NewBackup:
    """A record the tick created: what enqueueing and the tick's callers need, without loading the row."""

    pk: int
    tenant_id: int
    schema_name: str
    file_name: str
    slot: datetime
    backup_type: str = BackupRecord.Type.AUTOMATIC


@dataclass(frozen=True)
class Dispatch:
    """What one tick did."""

    created: list[NewBackup]
    claimed: int
    skipped_unmigrated: list[str]
    broken: dict[str, str] = field(default_factory=dict)  # schema -> why it could not be scheduled

    @cached_property
    def records(self) -> list[BackupRecord]:
        """The created records, loaded (in the order they were created)."""
        return list(BackupRecord.objects.filter(pk__in=[n.pk for n in self.created]).order_by("pk"))


class _Migrated(Func):
    """Whether the schema holds a django_migrations table (a tenant created a moment ago may not)."""

    template = "(to_regclass(quote_ident(%(expressions)s) || '.django_migrations') IS NOT NULL)"
    output_field = BooleanField()


def _claim(now: datetime) -> list[tuple]:
    """Lock the due tenants (skipping rows another dispatcher holds): their schedule fields and readiness."""
    Tenant = get_tenant_model()
    return list(
        Tenant.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(next_backup_at__lte=now)
        .exclude(backup_schedule=DISABLED)
        .exclude(schema_name=get_public_schema_name())
        .order_by("next_backup_at")
        .annotate(migrated=_Migrated(F("schema_name")))
        .values_list(*_CLAIMED, "migrated")[: backups_settings.BACKUPS_DISPATCH_BATCH]
    )


def _following_slots(rows: list[tuple], now: datetime) -> list[datetime | None | Exception]:
    """Each claimed tenant's next slot after `now`, a schedule at a time; an exception in place of a slot the
    tenant's stored fields cannot give."""
    out: list[datetime | None | Exception] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        schedule = row[_SCHEDULE_FIELDS]
        if schedule[0] != SCHEDULED:  # a one-shot is disabled once claimed
            groups.setdefault(schedule, []).append(i)
    for (schedule, at, weekday, day, zone), members in groups.items():
        spec = ScheduleSpec(schedule=schedule, backup_time=at, weekday=weekday, day_of_month=day,
                            timezone=zone or settings.TIME_ZONE, scheduled_at=None)
        try:
            following = next_backup_times(spec, [rows[i][_SCHEMA] for i in members], now)
        except Exception as exc:  # noqa: BLE001 - a row set behind validation's back: reported, the tenant stays due
            following = [exc] * len(members)
        for i, at_next in zip(members, following, strict=True):
            out[i] = at_next
    return out


def _record_template(backend: str, fmt: str, compression: str, encryption: str, now: datetime,
                     enqueued_at: datetime | None) -> BackupRecord:
    """A new automatic record with every column the tenants share (the model's own defaults for the rest)."""
    return BackupRecord(storage_backend=backend, format=fmt, compression=compression, encryption=encryption,
                        backup_type=BackupRecord.Type.AUTOMATIC, requested_by={"scheduler": True}, created_at=now,
                        enqueued_at=enqueued_at)


def _insert_statement(template: BackupRecord, rows: list[tuple], advance: list[tuple],
                      now: datetime) -> tuple[str, list]:
    """One statement: insert the records (a (tenant, slot) or key that exists is skipped), their 'create' events,
    and move the claimed tenants on. `rows` are _PER_TENANT tuples, `advance` (id, schedule, next_at); it returns
    (id, tenant_id) of the records inserted."""
    rec = connection.ops.quote_name(BackupRecord._meta.db_table)
    event = connection.ops.quote_name(BackupEvent._meta.db_table)
    meta = get_tenant_model()._meta
    tenants, pk = connection.ops.quote_name(meta.db_table), connection.ops.quote_name(meta.pk.column)
    pk_type = meta.pk.rel_db_type(connection)
    columns, exprs, shared = [], [], []
    for f in BackupRecord._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(connection.ops.quote_name(f.column))
        if f.attname in _PER_TENANT:
            exprs.append(f"u.{f.attname}")
        else:
            exprs.append(f"%s::{f.db_type(connection)}")
            shared.append(f.get_db_prep_save(getattr(template, f.attname), connection))
    # the per-tenant values travel as one JSON text each (psycopg dumps a Python list into an array at ~5 us an
    # element: 0.45 s of a 10,000-tenant tick; json.dumps and the server's parse take a tenth of that)
    sql = (
        f"WITH u AS (SELECT (r->>0)::{pk_type} AS tenant_id, (r->>1)::uuid AS tenant_uid, r->>2 AS schema_name, "
        "r->>3 AS file_name, r->>4 AS storage_key, (r->>5)::timestamptz AS slot "
        "FROM jsonb_array_elements(%s::jsonb) AS r), "
        f"ins AS (INSERT INTO {rec} ({', '.join(columns)}) SELECT {', '.join(exprs)} FROM u "
        "ON CONFLICT DO NOTHING RETURNING id, tenant_id, tenant_uid, schema_name, slot), "
        f"ev AS (INSERT INTO {event} (record_id, tenant_id, tenant_uid, schema_name, action, actor, details, "
        "created_at) SELECT id, tenant_id, tenant_uid, schema_name, %s, %s::jsonb, "
        "jsonb_build_object('slot', slot), %s "
        "FROM ins), "
        f"adv AS (UPDATE {tenants} AS t SET backup_schedule = a.schedule, next_backup_at = a.next_at "
        f"FROM (SELECT (r->>0)::{pk_type} AS id, r->>1 AS schedule, (r->>2)::timestamptz AS next_at "
        "FROM jsonb_array_elements(%s::jsonb) AS r) AS a "
        f"WHERE t.{pk} = a.id) "
        "SELECT id, tenant_id FROM ins"
    )
    params = [json.dumps([[t, str(u), s, n, k, slot.isoformat()] for t, u, s, n, k, slot in rows],
                         default=str)]
    params += shared
    params += [BackupEvent.Action.CREATE, '{"scheduler": true}', now]
    params.append(json.dumps([[t, sched, None if at is None else at.isoformat()] for t, sched, at in advance],
                             default=str))
    return sql, params


def _send(template: BackupRecord, rows: list[tuple], advance: list[tuple], now: datetime):
    """_insert_statement, executed on the driver's own cursor (Django's would send the tenant router's SET
    search_path ahead of it, whose result then takes the statement's place in a pipeline; the claim already set
    it for this transaction). The caller reads the inserted records with _inserted."""
    cur = connection.connection.cursor()
    cur.execute(*_insert_statement(template, rows, advance, now))
    return cur


def _inserted(cursors: list) -> dict[int, int]:
    """tenant_id -> record id of what the sent statements inserted."""
    out: dict[int, int] = {}
    for cur in cursors:
        out.update((tenant_id, pk) for pk, tenant_id in cur.fetchall())
        cur.close()
    return out


def _pipelined():
    """psycopg's pipeline mode on this transaction's connection (or nothing where libpq has none): each chunk's
    statement runs on the server while Python names the next chunk, so the tick costs about the server's share
    instead of the server's plus Python's."""
    raw = connection.connection
    return raw.pipeline() if isinstance(raw, psycopg.Connection) and psycopg.Pipeline.is_supported() else nullcontext()


def _named(part: list[tuple], now: datetime, fmt: str, compression: str, encryption: str,
           broken: dict[str, str]) -> tuple[list[tuple], list[tuple]]:
    """The claimed tenants' records (_PER_TENANT tuples) and advances (id, schedule, next_at); a tenant whose
    fields give no slot or no name goes to `broken` instead and stays due, so it shows as overdue."""
    rows, advance = [], []
    for row, following in zip(part, _following_slots(part, now), strict=True):
        tenant_id, schema, uid, slot, schedule = row[_ID], row[_SCHEMA], row[_UID], row[_DUE], row[_SCHEDULE_FIELDS][0]
        try:
            if isinstance(following, Exception):
                raise following
            name = backup_file_name(schema=schema, fmt=fmt, compression=compression, automatic=True, at=slot,
                                    encryption=encryption)
            key = tenant_key(schema, uid, name)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            broken[schema] = f"{type(exc).__name__}: {exc}"
            continue
        rows.append(NewRow(tenant_id, uid, schema, name, key, slot))
        advance.append((tenant_id, DISABLED if schedule == SCHEDULED else schedule, following))
    return rows, advance


def _with_free_keys(rows: list[tuple], backend: str) -> list[tuple]:
    """Rows whose key another record already has (a schedule edited twice within one second, next_backup_at set
    by hand), each given the next free -N suffix. Rare, so row by row."""
    used = set(BackupRecord.objects.filter(storage_backend=backend, storage_key__in=[r.storage_key for r in rows])
               .values_list("storage_key", flat=True))
    renamed = []
    for tenant_id, uid, schema, name, key, slot in rows:
        record = BackupRecord(tenant_id=tenant_id, tenant_uid=uid, schema_name=schema, file_name=name, storage_key=key,
                              storage_backend=backend)
        backup_record_next_free_name(record=record, used=used)
        used.add(record.storage_key)
        renamed.append(NewRow(tenant_id, uid, schema, record.file_name, record.storage_key, slot))
    return renamed


def _sorted_out(rows: list[tuple], inserted: dict[int, int]) -> list[NewBackup]:
    """The rows the insert took, as NewBackups."""
    return [NewBackup(pk=inserted[r.tenant_id], tenant_id=r.tenant_id, schema_name=r.schema_name,
                      file_name=r.file_name, slot=r.slot)
            for r in rows if r.tenant_id in inserted]


def dispatch_due_backups(*, now: datetime | None = None, enqueue: bool = True) -> Dispatch:
    """One tick: in one transaction, claim due tenants (FOR UPDATE SKIP LOCKED), record their slot, advance them.

    A second dispatcher running at the same moment skips the rows this one holds and, once it commits,
    finds them no longer due, so each slot gets one record (a slot that already has one is only advanced).
    Slots missed while nothing ticked collapse into one backup, because the next slot is computed after
    `now`, not after the missed one.
    """
    now = now or timezone.now()
    backend, encryption = backups_settings.BACKUPS_STORAGE, conf.default_encryption()
    fmt, compression = backups_settings.BACKUPS_DEFAULT_FORMAT, backups_settings.BACKUPS_COMPRESSION
    template = _record_template(backend, fmt, compression, encryption, now, now if enqueue else None)
    with transaction.atomic():
        due = _claim(now)
        ready = [row for row in due if row[_MIGRATED]]
        skipped = sorted(row[_SCHEMA] for row in due if not row[_MIGRATED])
        rows, broken, sent = [], {}, []
        with connection.wrap_database_errors, _pipelined():
            for start in range(0, len(ready), _CHUNK):
                part, advance = _named(ready[start:start + _CHUNK], now, fmt, compression, encryption, broken)
                if part:
                    sent.append(_send(template, part, advance, now))
                    rows += part
            inserted = _inserted(sent)
        created = _sorted_out(rows, inserted)
        missing = [r for r in rows if r.tenant_id not in inserted]
        if missing:  # a slot already recorded is only advanced; a key already taken gets a free name
            taken = set(BackupRecord.objects.filter(tenant_id__in=[r.tenant_id for r in missing],
                                                    slot__in={r.slot for r in missing})
                        .values_list("tenant_id", "slot"))
            renamed = _with_free_keys([r for r in missing if (r.tenant_id, r.slot) not in taken], backend)
            if renamed:
                with connection.wrap_database_errors:
                    created += _sorted_out(renamed, _inserted([_send(template, renamed, [], now)]))
        if enqueue:
            backups_publish_on_commit(created)
    for schema, error in broken.items():
        logger.error("dispatcher skipped tenant %s, which stays due: %s", schema, error)
    if skipped:
        logger.info("skipped %d tenants whose schema is not migrated yet: %s", len(skipped), ", ".join(skipped[:20]))
    return Dispatch(created=created, claimed=len(due), skipped_unmigrated=skipped, broken=broken)
