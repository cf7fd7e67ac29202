"""Sending backup work to Celery, always after the transaction that created it commits."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from backups.backup.batch.run import batch_sizes, batching_enabled
from backups.conf import backups_settings
from backups.models import BackupRecord
from backups.queues import (
    DUMP,
    DUMP_PRIORITY,
    FAN_OUT,
    RUN_BACKUP,
    RUN_BACKUP_BATCH,
    signature,
)


def shown(record: BackupRecord) -> str:
    """How Flower shows a task of this record (its `argsrepr`): the tenant and the file, not just an id."""
    return f"(record={record.pk}, tenant={record.schema_name}, file={record.file_name})"


def backup_message(record: BackupRecord):
    """The record's message: run_backup, which runs the whole pipeline for it (after-success included)."""
    queue = DUMP if record.backup_type == BackupRecord.Type.AUTOMATIC else DUMP_PRIORITY
    return signature(RUN_BACKUP, record.pk, queue=queue, argsrepr=shown(record))


def backups_enqueue(records: Iterable[BackupRecord]) -> None:
    """Mark the records enqueued and send their work once the current transaction commits.

    Up to BACKUPS_FANOUT_BATCH records get one message each from here. A larger set (a tick that found
    thousands of tenants due) is cut into batches of record ids, each sent as one `fan_out_backups`
    task: the tick then costs a few publishes instead of one Celery publish (~1 ms) per tenant, and
    the dispatch workers send the messages in parallel.
    """
    records = list(records)
    if not records:
        return
    BackupRecord.objects.filter(pk__in=[r.pk for r in records]).update(enqueued_at=timezone.now())
    backups_publish_on_commit(records)


def backups_publish_on_commit(records: list) -> None:
    """Send the work of records already marked enqueued once the transaction commits (records, or anything
    with their pk, backup_type, tenant_id, schema_name and file_name: the dispatcher passes what it inserted)."""
    if not records:
        return
    if batching_enabled() and len(records) > 1:
        transaction.on_commit(lambda: publish_batches(records))
        return
    batch = max(1, backups_settings.BACKUPS_FANOUT_BATCH)
    if len(records) <= batch:
        transaction.on_commit(lambda: publish_messages([backup_message(record) for record in records]))
        return
    ids = [r.pk for r in records]
    transaction.on_commit(lambda: publish_fan_out([ids[i:i + batch] for i in range(0, len(ids), batch)]))


def backups_fan_out(*, record_ids: list[int]) -> int:
    """Send the messages of those records still queued (a redelivered batch skips what already ran)."""
    records = list(
        BackupRecord.objects.filter(pk__in=record_ids, status=BackupRecord.Status.QUEUED)
        .only("pk", "backup_type", "tenant_id", "schema_name", "file_name").order_by("pk")
    )
    if batching_enabled() and len(records) > 1:
        publish_batches(records)
    else:
        publish_messages([backup_message(record) for record in records])
    return len(records)


def publish_batches(records: list[BackupRecord]) -> None:
    """One run_backup_batch message per batch of records (automatic and manual ones on their own queues),
    sized so every dump slot gets a share (batch_sizes); the worker cuts a batch the server cannot hold."""
    from celery import current_app

    by_queue: dict[str, list[BackupRecord]] = {}
    for record in records:
        queue = DUMP if record.backup_type == BackupRecord.Type.AUTOMATIC else DUMP_PRIORITY
        by_queue.setdefault(queue, []).append(record)
    with current_app.producer_or_acquire() as producer:
        for queue, members in by_queue.items():
            size = batch_sizes(len(members))
            for i in range(0, len(members), size):
                part = members[i:i + size]
                tenants = ", ".join(r.schema_name for r in part[:20]) + (", ..." if len(part) > 20 else "")
                current_app.send_task(RUN_BACKUP_BATCH, kwargs={"record_ids": [r.pk for r in part]},
                                      queue=queue, producer=producer,
                                      kwargsrepr=f"{{{len(part)} tenants: {tenants}}}")


def backups_send_alone(*, record_ids: list[int]) -> None:
    """Send one run_backup message per record (batch members to retry alone)."""
    records = list(BackupRecord.objects.filter(pk__in=record_ids)
                   .only("pk", "backup_type", "tenant_id", "schema_name", "file_name"))
    publish_messages([backup_message(record) for record in records])


def publish_fan_out(batches: list[list[int]]) -> None:
    """One fan_out_backups task per batch of record ids, through one producer."""
    from celery import current_app

    with current_app.producer_or_acquire() as producer:
        for ids in batches:
            current_app.send_task(FAN_OUT, kwargs={"record_ids": ids}, producer=producer,
                                  kwargsrepr=f"{{{len(ids)} records: {ids[0]}..{ids[-1]}}}")


def publish_messages(messages: list) -> None:
    """Send the messages through one producer in batches: ~1 ms a message instead of ~3 (kombu makes a client per
    publish). A failed flush loses its batch; those records stay queued and the reaper sends them again."""
    from celery import current_app

    with current_app.producer_or_acquire() as producer, producer.batch(max_size=500):
        for message in messages:
            message.apply_async(producer=producer)
