"""Find work a dead worker or a lost broker message left behind, and send it again once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from backups import conf
from backups.locks import RECORD_NAMESPACE, advisory_lock
from backups.models import BackupRecord
from backups.storage import StorageError, get_storage

from .enqueue import backups_enqueue
from .records import backup_record_mark_failed

logger = logging.getLogger(__name__)
REQUEUED = "requeued"


@dataclass
class Reaped:
    """What the reaper did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    aborted_uploads: int = 0


def _requeue_or_fail(record: BackupRecord, why: str, result: Reaped) -> None:
    if record.stage == REQUEUED:
        backup_record_mark_failed(record=record, error=f"{why}, again after being sent once more; giving up.")
        result.failed.append(record.pk)
        return
    record.status, record.stage = BackupRecord.Status.QUEUED, REQUEUED
    record.error = why
    record.save(update_fields=["status", "stage", "error"])
    backups_enqueue([record])
    result.requeued.append(record.pk)


def abort_stale_uploads() -> int:
    """Abort multipart uploads older than the hard time limit (a worker died mid-upload); they cost money."""
    storage = get_storage()
    abort = getattr(storage, "abort_incomplete_uploads", None) or getattr(
        getattr(storage, "s3", None), "abort_incomplete_uploads", None)
    if abort is None:
        return 0
    try:
        return abort("", older_than=timedelta(seconds=conf.get("BACKUPS_DUMP_TIME_LIMIT")
                                              + conf.get("BACKUPS_RUNNING_GRACE_SECONDS")))
    except StorageError as exc:
        logger.warning("could not abort stale uploads: %s", exc)
        return 0


def reap_stuck_backups(*, now: datetime | None = None) -> Reaped:
    """Records `running` past the hard time limit with no live worker, and `queued` ones never picked up."""
    now = now or timezone.now()
    result = Reaped()
    running_cutoff = now - timedelta(seconds=conf.get("BACKUPS_DUMP_TIME_LIMIT")
                                     + conf.get("BACKUPS_RUNNING_GRACE_SECONDS"))
    queued_cutoff = now - timedelta(seconds=conf.get("BACKUPS_QUEUED_TIMEOUT_SECONDS"))
    for record in BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING, started_at__lt=running_cutoff):
        with advisory_lock(RECORD_NAMESPACE, record.pk) as free:
            if free:  # nobody holds it: the worker that ran it is gone
                with transaction.atomic():
                    _requeue_or_fail(record, "Its worker stopped while running it", result)
    stale = BackupRecord.objects.filter(status=BackupRecord.Status.QUEUED, enqueued_at__lt=queued_cutoff)
    for record in stale:
        with transaction.atomic():
            _requeue_or_fail(record, "Its task message was never picked up (the broker may have lost it)", result)
    result.aborted_uploads = abort_stale_uploads()
    if result.requeued or result.failed:
        logger.warning("reaper requeued %s, failed %s", result.requeued, result.failed)
    return result
