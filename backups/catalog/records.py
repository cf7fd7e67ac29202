"""Services that create and move backup records through their states: the one owner of `status` and `stage`.

Every write of a record's status or stage goes through a function here (one record at a time, or in bulk for
the dispatcher's and the batch's speed); the values are BackupRecord.Status and BackupRecord.Stage.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, get_tenant_model

from backups import conf
from backups.catalog.alerts import alert_ops
from backups.conf import backups_settings
from backups.core.errors import BackupError
from backups.core.naming import PUBLIC_UID, backup_file_name, tenant_key, validate_schema_name, with_suffix
from backups.models import BackupCopy, BackupEvent, BackupRecord

logger = logging.getLogger(__name__)


def backup_record_create(
    *,
    schema_name: str,
    tenant: Any = None,
    fmt: str | None = None,
    compression: str | None = None,
    backup_type: str = BackupRecord.Type.MANUAL,
    requested_by: dict | None = None,
    slot=None,
    storage_backend: str | None = None,
    encryption: str | None = None,
    at=None,
) -> BackupRecord:
    """A queued record with its final file name and key; a same-second name gets a suffix, never a reuse."""
    validate_schema_name(schema_name)
    if schema_name == get_public_schema_name():  # the shared tables: no tenant's, under their fixed identity
        tenant, uid = None, PUBLIC_UID
    else:
        if tenant is None:  # an operator's call by schema name: the tenant that owns the schema now, if any
            tenant = get_tenant_model().objects.filter(schema_name=schema_name).first()
        uid = tenant.tenant_uid if tenant is not None else uuid.uuid4()  # no tenant: an identity nobody has
    fmt = fmt or backups_settings.BACKUPS_DEFAULT_FORMAT
    compression = compression or backups_settings.BACKUPS_COMPRESSION
    encryption = conf.default_encryption() if encryption is None else encryption
    if fmt not in BackupRecord.Format.values:
        raise ValueError(f"Unknown format {fmt!r} (use sql, dump or json).")
    if compression not in BackupRecord.Compression.values:
        raise ValueError(f"Unknown compression {compression!r} (use zstd, gzip or none).")
    now = at or timezone.now()
    for attempt in range(1, 100):
        name = backup_file_name(
            schema=schema_name, fmt=fmt, compression=compression, encryption=encryption,
            automatic=backup_type == BackupRecord.Type.AUTOMATIC, at=now, suffix="" if attempt == 1 else f"-{attempt}",
        )
        try:
            with transaction.atomic():
                record = BackupRecord.objects.create(
                    tenant=tenant, tenant_uid=uid, schema_name=schema_name, file_name=name,
                    storage_backend=storage_backend or backups_settings.BACKUPS_STORAGE,
                    storage_key=tenant_key(schema_name, uid, name), format=fmt, compression=compression,
                    encryption=encryption, backup_type=backup_type, requested_by=requested_by or {}, slot=slot,
                )
        except IntegrityError as exc:
            if "backups_record_unique_key" in str(exc):
                continue
            raise
        backup_event_create(record=record, action=BackupEvent.Action.CREATE, actor=requested_by or {})
        return record
    raise RuntimeError("Could not find a free backup file name.")


def backup_event_create(
    *, record: BackupRecord | None, action: str, actor: dict | None = None, schema_name: str | None = None,
    tenant: Any = None, ip_address: str | None = None, details: dict | None = None,
) -> BackupEvent:
    """Append one audit event."""
    tenant = tenant if tenant is not None else (record.tenant if record else None)
    return BackupEvent.objects.create(
        record=record, tenant=tenant,
        tenant_uid=record.tenant_uid if record is not None else getattr(tenant, "tenant_uid", None),
        schema_name=schema_name or (record.schema_name if record else ""), action=action, actor=actor or {},
        ip_address=ip_address, details=details or {},
    )


def backup_record_next_free_name(*, record: BackupRecord, used: set[str] | frozenset[str] = frozenset(),
                                 storage=None) -> BackupRecord:
    """Give the (unsaved or saved) record the first `-N` variant of its name that no other record, no key in
    `used` and, when `storage` is given, no stored object has. The caller saves it."""
    for n in range(2, 1000):
        name = with_suffix(record.file_name, n)
        key = tenant_key(record.schema_name, record.tenant_uid, name)
        if key in used or BackupRecord.objects.filter(storage_backend=record.storage_backend,
                                                      storage_key=key).exists() or _copy_holds(key):
            continue
        if storage is None or storage.stat(key) is None:
            record.file_name, record.storage_key = name, key
            return record
    raise BackupError(f"No free name next to {record.storage_key}: 1,000 objects already use it.")


def _copy_holds(key: str) -> bool:
    """Whether the second target keeps a copy at `key` (its record deleted by the primary's retention): a new
    backup under the same key would overwrite it there."""
    return BackupCopy.objects.filter(storage_key=key).exists()


def backup_record_take_free_key(*, record: BackupRecord, storage) -> BackupRecord:
    """Never overwrite: when an object already sits at the record's key (its record was lost, or deleted
    without it), or a copy of an earlier backup kept there in the second target, keep it and move this record to
    the next free `-N` name before anything is written."""
    if storage.stat(record.storage_key) is None and not _copy_holds(record.storage_key):
        return record
    taken = record.storage_key
    backup_record_next_free_name(record=record, storage=storage)
    logger.warning("an object without this record already sits at %s; backup %s is stored as %s instead",
                   taken, record.pk, record.storage_key)
    record.save(update_fields=["file_name", "storage_key"])
    return record


def backup_record_mark_running(*, record: BackupRecord, task_id: str = "") -> BackupRecord:
    """Claim the record for this run."""
    record.status = BackupRecord.Status.RUNNING
    record.started_at = timezone.now()
    record.finished_at = None
    record.attempts += 1
    record.error = ""
    record.stage = BackupRecord.Stage.DUMPING
    record.bytes_done = 0
    if task_id:
        record.task_id = task_id
    record.save(update_fields=["status", "started_at", "finished_at", "attempts", "error", "stage", "bytes_done",
                               "task_id"])
    return record


def backup_record_mark_succeeded(*, record: BackupRecord, size: int, sha256: str, plain_size: int,
                                 plain_sha256: str, manifest: dict) -> BackupRecord:
    """Record a confirmed upload."""
    record.status = BackupRecord.Status.SUCCEEDED
    record.finished_at = timezone.now()
    record.size, record.sha256 = size, sha256
    record.plain_size, record.plain_sha256 = plain_size, plain_sha256
    record.bytes_done = plain_size
    record.manifest = manifest
    record.stage = BackupRecord.Stage.DONE
    record.error = ""
    record.save()
    backup_event_create(record=record, action=BackupEvent.Action.SUCCEED, details={"size": size})
    logger.info("backup succeeded: tenant=%s record=%s file=%s size=%s duration=%s", record.schema_name,
                record.pk, record.file_name, size, _duration(record), extra=_log_fields(record))
    return record


def _duration(record: BackupRecord) -> str:
    seconds = record.duration_seconds
    return "-" if seconds is None else f"{seconds:.2f}s"


def _log_fields(record: BackupRecord, **more: Any) -> dict[str, Any]:
    """The record's fields a log line carries as data (JSON logs, Sentry): one event, every fact beside it."""
    return {"event": f"backup_{record.status}", "tenant": record.schema_name, "record_id": record.pk,
            "file_name": record.file_name, "backup_type": record.backup_type, "storage_backend": record.storage_backend,
            "size": record.size, "duration_seconds": record.duration_seconds, "attempts": record.attempts, **more}


def backup_record_mark_failed(*, record: BackupRecord, error: str) -> BackupRecord:
    """Record a failure with a message users can act on."""
    record.status = BackupRecord.Status.FAILED
    record.finished_at = timezone.now()
    record.error = error[:10000]
    record.stage = BackupRecord.Stage.FAILED
    record.save(update_fields=["status", "finished_at", "error", "stage"])
    backup_event_create(record=record, action=BackupEvent.Action.FAIL, details={"error": error[:500]})
    one_line = " | ".join(line.strip() for line in error.splitlines() if line.strip())[:1000]
    logger.error("backup failed: tenant=%s record=%s file=%s duration=%s error=%s", record.schema_name, record.pk,
                 record.file_name, _duration(record), one_line, extra=_log_fields(record, error=error[:2000]))
    return record


def backup_record_fail_unfinished(*, record_id: int, error: str) -> BackupRecord | None:
    """Mark the record failed unless it already finished: a failure the run already wrote is not written twice."""
    record = BackupRecord.objects.filter(pk=record_id).first()
    if record is None or record.is_finished:
        return record
    return backup_record_mark_failed(record=record, error=error)


def backup_record_mark_queued(*, record: BackupRecord, error: str) -> BackupRecord:
    """Put a record back in the queue after a transient failure (the task retries it)."""
    record.status = BackupRecord.Status.QUEUED
    record.error = error[:10000]
    record.stage = BackupRecord.Stage.RETRYING
    record.save(update_fields=["status", "error", "stage"])
    return record


# bulk twins of backup_record_mark_running and backup_record_mark_succeeded, for a batch's members;
# tests/integration/test_batch_backup.py compares what each leaves with what the single functions leave

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
              "stage": BackupRecord.Stage.DUMPING, "bytes_done": 0}
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
        record.stage = BackupRecord.Stage.DONE
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


def backup_record_mark_requeued(*, record: BackupRecord, error: str) -> BackupRecord:
    """The reaper sends the record again (its worker died or its message was lost): queued, stage `requeued`, so a
    second loss fails it. The caller enqueues it."""
    record.status, record.stage, record.error = BackupRecord.Status.QUEUED, BackupRecord.Stage.REQUEUED, error
    record.save(update_fields=["status", "stage", "error"])
    return record


def backup_record_mark_resent_if_queued(*, record: BackupRecord, error: str) -> bool:
    """Stage `requeued` (and `error`) on a record still queued, in one conditional UPDATE; whether it was.
    The reaper's resend of a message the broker lost; the caller enqueues it when True."""
    return bool(BackupRecord.objects.filter(pk=record.pk, status=BackupRecord.Status.QUEUED).update(
        stage=BackupRecord.Stage.REQUEUED, error=error))


def backup_records_requeue_failed(*, record_ids: list[int]) -> int:
    """Queue failed records again (the admin's retry), in one UPDATE; the count. The caller enqueues them."""
    return BackupRecord.objects.filter(pk__in=record_ids).update(status=BackupRecord.Status.QUEUED, error="")


def backup_record_mark_deleting(*, record: BackupRecord) -> bool:
    """Stage `deleting`, before the record's object is deleted (crash-safe deletion: the reaper finishes a record
    left so). True when this call marked it, False when it already was."""
    marked = BackupRecord.objects.filter(pk=record.pk).exclude(stage=BackupRecord.Stage.DELETING).update(
        stage=BackupRecord.Stage.DELETING)
    record.stage = BackupRecord.Stage.DELETING
    return bool(marked)


def backup_record_unmark_deleting(*, record: BackupRecord, stage: str, locked_until: datetime | None) -> None:
    """The store refused to delete the record's object (S3 Object Lock): back to `stage`, with the store's date."""
    BackupRecord.objects.filter(pk=record.pk).update(stage=stage, locked_until=locked_until)
    record.stage, record.locked_until = stage, locked_until


def backup_records_deleting():
    """Records left `deleting` by an interrupted deletion."""
    return BackupRecord.objects.filter(stage=BackupRecord.Stage.DELETING)


def backup_record_mark_missing(*, record: BackupRecord, error: str) -> None:
    """Its stored object is gone (reconcile): failed, stage `missing`, in one UPDATE."""
    BackupRecord.objects.filter(pk=record.pk).update(status=BackupRecord.Status.FAILED, error=error,
                                                     stage=BackupRecord.Stage.MISSING)


def backup_record_create_imported(**fields: Any) -> BackupRecord:
    """A record rebuilt from a stored object's signed manifest (reconcile): succeeded, stage `imported`."""
    return BackupRecord.objects.create(status=BackupRecord.Status.SUCCEEDED, stage=BackupRecord.Stage.IMPORTED,
                                       **fields)


def backup_record_mark_damaged(*, record: BackupRecord, error: str) -> BackupRecord:
    """The stored object failed its size or SHA-256 check: never offer it again, and tell ops.

    The record stays (with its object, for forensics) but is excluded from restores, drills and from
    retention's "newest good backup", so retention keeps everything else until a good backup exists.
    """
    updated = BackupRecord.objects.filter(pk=record.pk, damaged_at__isnull=True).update(
        damaged_at=timezone.now(), error=error[:10000])
    record.refresh_from_db(fields=["damaged_at", "error"])
    if updated:
        logger.error("backup %s of %s is damaged: %s", record.pk, record.schema_name, error)
        backup_event_create(record=record, action=BackupEvent.Action.FAIL, details={"damaged": True,
                                                                                    "error": error[:500]})
        alert_ops(f"Backup {record.file_name} of {record.schema_name} is damaged",
                  f"The stored object {record.storage_key} of backup {record.pk} failed its check:\n{error}\n\n"
                  "It is no longer offered for restore; retention keeps the tenant's other backups.")
    return record


def backup_record_set_locked_until(*, record: BackupRecord, until: datetime | None) -> BackupRecord:
    """The retain-until date the store now holds for the record's object and manifest (S3 Object Lock)."""
    BackupRecord.objects.filter(pk=record.pk).update(locked_until=until)
    record.locked_until = until
    return record


def backup_records_erase(*, tenant_uid) -> int:
    """Forget every record and copy of a tenant identity (its erasure: objects and keys are gone first); the count
    of records. Audit events stay, with their file names: they say what was erased, never what it held."""
    BackupCopy.objects.filter(tenant_uid=tenant_uid).delete()
    deleted, _ = BackupRecord.objects.filter(tenant_uid=tenant_uid).delete()
    return deleted


# -- copies in the second target (backups.backup.copy) ------------------------------------------------------

def copy_for_record(*, record: BackupRecord, backend: str) -> BackupCopy:
    """The record's copy row in `backend` (created pending on first use)."""
    copy, _ = BackupCopy.objects.get_or_create(
        backend=backend, storage_key=record.storage_key,
        defaults={"record": record, "tenant_uid": record.tenant_uid, "schema_name": record.schema_name,
                  "file_name": record.file_name, "backup_type": record.backup_type,
                  "backup_created_at": record.created_at, "size": record.size, "sha256": record.sha256})
    return copy


def copy_mark_started(*, copy: BackupCopy) -> BackupCopy:
    """One more attempt: pending."""
    copy.status, copy.attempts, copy.error = BackupCopy.Status.PENDING, copy.attempts + 1, ""
    copy.save(update_fields=["status", "attempts", "error"])
    return copy


def copy_mark_copied(*, copy: BackupCopy, locked_until: datetime | None = None) -> BackupCopy:
    """The copy's bytes and manifest are stored and its digest matched."""
    copy.status, copy.error, copy.copied_at, copy.locked_until = (BackupCopy.Status.COPIED, "", timezone.now(),
                                                                  locked_until)
    copy.save(update_fields=["status", "error", "copied_at", "locked_until"])
    return copy


def copy_mark_failed(*, copy: BackupCopy, error: str) -> BackupCopy:
    """The copy could not be made (or was found missing): failed, with why."""
    copy.status, copy.error = BackupCopy.Status.FAILED, error[:10000]
    copy.save(update_fields=["status", "error"])
    return copy


def copy_delete(*, copy: BackupCopy) -> None:
    """Forget a copy whose objects are gone."""
    copy.delete()
