"""Backups through the API: create (one at a time, a few per hour), wait, find, delete. Views stay thin."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_tenants.utils import get_tenant_model

from backups.backup.enqueue import backups_enqueue
from backups.catalog.finalize import backup_record_delete
from backups.catalog.records import backup_event_create, backup_record_create
from backups.conf import backups_settings
from backups.core.service_errors import ConflictError, NotFoundError, RateLimited
from backups.models import BackupEvent, BackupRecord, RestoreJob
from backups.storage import ObjectLocked

MAX_ID = 2**63 - 1


def actor_snapshot(user: Any) -> dict:
    """What an audit event or a record keeps of a user: users live in tenant schemas, records in public."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    full_name = getattr(user, "get_full_name", None)
    name = (full_name() if callable(full_name) else "") or ""
    return {"id": user.pk, "email": getattr(user, "email", "") or "", "name": str(name)}


# --- selectors ---------------------------------------------------------------------------------------------

def api_records_for_tenant(*, tenant: Any) -> QuerySet[BackupRecord]:
    """The tenant's records, newest first: bound to its identity, never to its (reusable) schema name."""
    return BackupRecord.objects.filter(tenant_uid=tenant.tenant_uid).order_by("-created_at", "-id")


@dataclass(frozen=True)
class HistoryFilters:
    """The history's filters, already validated."""

    backup_type: str | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None


def api_records_filter(*, tenant: Any, filters: HistoryFilters) -> QuerySet[BackupRecord]:
    """The tenant's records matching the filters (dates are days of created_at, inclusive)."""
    qs = api_records_for_tenant(tenant=tenant)
    if filters.backup_type:
        qs = qs.filter(backup_type=filters.backup_type)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.date_from:
        qs = qs.filter(created_at__date__gte=filters.date_from)
    if filters.date_to:
        qs = qs.filter(created_at__date__lte=filters.date_to)
    return qs


def api_record_get(*, tenant: Any, record_id: Any) -> BackupRecord:
    """One record of the tenant; NotFoundError for any other id (another tenant's looks the same as none)."""
    pk = _as_id(record_id)
    record = BackupRecord.objects.filter(pk=pk, tenant_uid=tenant.tenant_uid).first() if pk else None
    if record is None:
        raise NotFoundError("No backup with this id.")
    return record


def api_events_for_tenant(*, tenant: Any) -> QuerySet[BackupEvent]:
    """The tenant's audit trail, newest first."""
    return (BackupEvent.objects.filter(tenant_uid=tenant.tenant_uid).select_related("record")
            .order_by("-created_at", "-id"))


def _as_id(value: Any) -> int | None:
    """A positive database id, or None for anything else (a string, a negative, past bigint)."""
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


# --- services ----------------------------------------------------------------------------------------------

def _ensure_nothing_running(tenant: Any) -> None:
    active = (BackupRecord.objects.active().filter(tenant_uid=tenant.tenant_uid)
              .order_by("created_at").first())
    if active is not None:
        kind = {"manual": "A manual", "automatic": "An automatic", "pre_restore": "A safety"}.get(
            active.backup_type, "A")
        raise ConflictError(f"{kind} backup of this tenant is already {active.status} (id {active.pk}, "
                            f"{active.file_name}); wait until it finishes.")
    job = RestoreJob.objects.active().filter(tenant_uid=tenant.tenant_uid).order_by("created_at").first()
    if job is not None:
        raise ConflictError(f"A {job.mode} of this tenant is {job.status} (restore job {job.pk}); "
                            f"wait until it finishes.")


def api_hourly_limit_check(*, tenant: Any, now: datetime, action: str, setting: str, what: str) -> None:
    """RateLimited (429, with the wait) once the tenant made `setting` requests of `action` through the API in
    the last hour. Counts audit events, which outlive records and jobs, so deleting them lifts nothing."""
    limit = getattr(backups_settings, setting)
    window = timedelta(hours=1)
    recent = list(
        BackupEvent.objects.filter(tenant_uid=tenant.tenant_uid, action=action, details__via="api",
                                   created_at__gt=now - window)
        .order_by("created_at").values_list("created_at", flat=True)
    )
    if limit <= 0:
        raise RateLimited(f"{what.capitalize()} are turned off for this deployment ({setting}=0).", wait=3600)
    if len(recent) < limit:
        return
    next_at = recent[len(recent) - limit] + window
    wait = max(1, math.ceil((next_at - now).total_seconds()))
    raise RateLimited(f"At most {limit} {what} per hour; the next one is allowed at "
                      f"{next_at.isoformat(timespec='seconds')} (in {wait} s).", wait=wait)


def _ensure_under_hourly_limit(tenant: Any, now: datetime) -> None:
    api_hourly_limit_check(tenant=tenant, now=now, action=BackupEvent.Action.CREATE,
                           setting="BACKUPS_MANUAL_PER_HOUR", what="manual backups")


def api_backup_create(*, tenant: Any, actor: dict, ip_address: str | None, fmt: str | None = None,
                      compression: str | None = None) -> BackupRecord:
    """A queued manual backup on the priority queue, unless one is running or the hourly limit is reached.

    The tenant's row is locked for the check and the insert, so two requests at the same moment
    cannot both pass: the second waits for the first to commit, then sees its queued record.
    """
    Tenant = get_tenant_model()
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        now = timezone.now()
        _ensure_nothing_running(locked)
        _ensure_under_hourly_limit(locked, now)
        record = backup_record_create(schema_name=locked.schema_name, tenant=locked, fmt=fmt, compression=compression,
                                      backup_type=BackupRecord.Type.MANUAL, requested_by=actor, at=now)
        BackupEvent.objects.filter(record=record, action=BackupEvent.Action.CREATE).update(
            ip_address=ip_address, details={"via": "api", "file_name": record.file_name})
        backups_enqueue([record])
    return record


def api_backup_wait(*, record_id: int, timeout: float) -> BackupRecord:
    """Poll the record until it finished or `timeout` seconds passed; returns it as it is then."""
    deadline = time.monotonic() + max(0.0, float(timeout))
    poll = backups_settings.BACKUPS_SYNC_POLL_SECONDS
    while True:
        record = BackupRecord.objects.filter(pk=record_id).first()
        if record is None:
            raise NotFoundError("The backup was deleted while waiting for it.")
        if not record.is_active or time.monotonic() >= deadline:
            return record
        time.sleep(min(poll, max(0.01, deadline - time.monotonic())))


def api_record_delete(*, record: BackupRecord, actor: dict, ip_address: str | None) -> str:
    """Delete the object, its manifest and the record; refuses a record a worker may still write."""
    if record.is_active:
        raise ConflictError(f"Backup {record.pk} is {record.status}; it can be deleted once it finishes.")
    file_name = record.file_name
    api_events_keep_file_name(record=record)
    try:
        backup_record_delete(record=record, actor=actor, ip_address=ip_address)
    except ObjectLocked as exc:
        raise ConflictError(str(exc)) from None
    return file_name


def api_events_keep_file_name(*, record: BackupRecord) -> None:
    """Copy the file name into the record's events, so the audit trail still names it once the record is gone."""
    for event in BackupEvent.objects.filter(record=record):
        if not (event.details or {}).get("file_name"):
            event.details = {**(event.details or {}), "file_name": record.file_name}
            event.save(update_fields=["details"])


def api_download_recorded(*, record: BackupRecord | None, tenant: Any, actor: dict,
                          ip_address: str | None, via: str, key: str) -> None:
    """Audit a download (before its bytes go out)."""
    backup_event_create(record=record, action=BackupEvent.Action.DOWNLOAD, actor=actor, schema_name=tenant.schema_name,
                        tenant=tenant, ip_address=ip_address,
                        details={"via": via, "storage_key": key,
                                 "file_name": record.file_name if record else key.rsplit("/", 1)[-1]})
