"""Backup tasks: load by id, call one service, own the retry policy."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context

from backups.errors import TransientBackupError
from backups.models import BackupRecord
from backups.services.backup_run import backup_run
from backups.services.records import backup_record_mark_failed

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    name="tasks.backups.run_backup",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.BACKUPS_DUMP_SOFT_TIME_LIMIT,
    time_limit=settings.BACKUPS_DUMP_TIME_LIMIT,
    max_retries=settings.BACKUPS_TASK_MAX_RETRIES,
    default_retry_delay=settings.BACKUPS_TASK_RETRY_DELAY,
    ignore_result=True,
)
def run_backup(self, record_id: int, **kwargs) -> str:
    """Dump, compress and store one record's backup (stages of one streaming task)."""
    with schema_context(get_public_schema_name()):
        try:
            record = backup_run(record_id=record_id, task_id=self.request.id or "")
        except TransientBackupError as exc:
            if self.request.retries >= self.max_retries:
                record = BackupRecord.objects.get(pk=record_id)
                backup_record_mark_failed(record=record, error=f"Gave up after {self.request.retries + 1} tries: {exc}")
                return "failed"
            raise self.retry(exc=exc, countdown=settings.BACKUPS_TASK_RETRY_DELAY * 2 ** self.request.retries)
        except SoftTimeLimitExceeded:
            record = BackupRecord.objects.get(pk=record_id)
            backup_record_mark_failed(
                record=record, error=f"The backup took longer than {settings.BACKUPS_DUMP_SOFT_TIME_LIMIT} s."
            )
            return "failed"
    return record.status if record else "missing"
