"""Sending backup work to Celery, always after the transaction that created it commits."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from backups.models import BackupRecord


def backup_chain(record: BackupRecord):
    """run_backup -> record_backup (-> apply_retention for automatic ones), immutable signatures."""
    from celery import chain

    from tasks.backups import apply_retention, record_backup, run_backup
    from tasks.queues import DUMP, DUMP_PRIORITY

    queue = DUMP if record.backup_type == BackupRecord.Type.AUTOMATIC else DUMP_PRIORITY
    links = [run_backup.si(record.pk).set(queue=queue), record_backup.si(record.pk)]
    if record.backup_type == BackupRecord.Type.AUTOMATIC and record.tenant_id:
        links.append(apply_retention.si(record.tenant_id))
    return chain(*links)


def backups_enqueue(records: Iterable[BackupRecord]) -> None:
    """Mark the records enqueued and send one chain each once the current transaction commits."""
    records = list(records)
    if not records:
        return
    BackupRecord.objects.filter(pk__in=[r.pk for r in records]).update(enqueued_at=timezone.now())

    def send() -> None:
        for record in records:
            backup_chain(record).apply_async()

    transaction.on_commit(send)
