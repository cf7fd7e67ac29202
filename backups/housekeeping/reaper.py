"""Find work a dead worker or a lost broker message left behind and send it again; clean up after the dead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backups.backup.enqueue import backups_enqueue
from backups.catalog.faults import retry_delays
from backups.catalog.finalize import finish_interrupted_deletions
from backups.catalog.records import (
    backup_record_mark_failed,
    backup_record_mark_requeued,
    backup_record_mark_resent_if_queued,
)
from backups.conf import backups_settings
from backups.housekeeping.broker_scan import record_ids_in_broker
from backups.housekeeping.restore_reaper import restore_jobs_reap
from backups.models import BackupRecord
from backups.postgres.leftovers import leftovers_remove
from backups.postgres.locks import RECORD_NAMESPACE, advisory_lock
from backups.storage import StorageError, get_storage

logger = logging.getLogger(__name__)


@dataclass
class Reaped:
    """What the reaper did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    aborted_uploads: int = 0
    finished_deletions: int = 0
    requeued_restore_jobs: list[int] = field(default_factory=list)
    failed_restore_jobs: list[int] = field(default_factory=list)
    removed_spool_files: int = 0  # left by dead processes (backups.postgres.leftovers)
    dropped_scratch_databases: list[str] = field(default_factory=list)  # left by dead verify drills


def _requeue_or_fail(record: BackupRecord, why: str, result: Reaped) -> None:
    if record.stage == BackupRecord.Stage.REQUEUED:
        backup_record_mark_failed(record=record, error=f"{why}, again after being sent once more; giving up.")
        result.failed.append(record.pk)
        return
    backup_record_mark_requeued(record=record, error=why)
    backups_enqueue([record])
    result.requeued.append(record.pk)


def abort_stale_uploads() -> int:
    """Abort multipart uploads whose abort failed when their writer gave up (on this run, whatever their age), and
    those and `.partial-*` files older than the hard time limit (their writer died)."""
    storage = get_storage()
    owner = storage if hasattr(storage, "abort_incomplete_uploads") else getattr(storage, "s3", None)
    abort = getattr(owner, "abort_incomplete_uploads", None)
    if abort is None:
        return 0
    aborted = 0
    remembered = getattr(owner, "abort_remembered_uploads", None)
    if remembered is not None:
        try:
            aborted += remembered()
        except StorageError as exc:
            logger.warning("could not abort the uploads whose abort failed: %s", exc)
    running = set(BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING).values_list("storage_key",
                                                                                           flat=True))
    try:
        return aborted + abort("", older_than=timedelta(seconds=backups_settings.BACKUPS_DUMP_TIME_LIMIT
                                                        + backups_settings.BACKUPS_RUNNING_GRACE_SECONDS), keep=running)
    except StorageError as exc:
        logger.warning("could not abort stale uploads: %s", exc)
        return aborted


def _reap_running(now: datetime, result: Reaped) -> None:
    """`running` records whose lock is free: the worker (or `backup_tenant` command) that ran them is gone.

    The lock is taken before a record is marked running and released after its last write, so a free lock on a
    running record means its holder died: it is resent after BACKUPS_ORPHAN_GRACE_SECONDS, not after the hard
    time limit. Past the hard limit plus grace the old rule stays as a backstop.
    """
    orphan_cutoff = now - timedelta(seconds=backups_settings.BACKUPS_ORPHAN_GRACE_SECONDS)
    for record in BackupRecord.objects.filter(status=BackupRecord.Status.RUNNING, started_at__lt=orphan_cutoff):
        with advisory_lock(RECORD_NAMESPACE, record.pk) as free:
            if not free:
                continue
            record.refresh_from_db()
            if record.status != BackupRecord.Status.RUNNING:
                continue  # it finished between the query and the lock
            why = (f"It was left running (stage {record.stage or 'starting'}) by a worker that stopped or lost its "
                   "database connection")
            with transaction.atomic():
                if record.attempts > len(retry_delays(record)) + backups_settings.BACKUPS_TASK_MAX_RETRIES:
                    backup_record_mark_failed(record=record, error=f"{why}, {record.attempts} times; giving up.")
                    result.failed.append(record.pk)
                    continue
                backup_record_mark_requeued(record=record, error=why)
                backups_enqueue([record])
                result.requeued.append(record.pk)


def _reap_queued(now: datetime, result: Reaped, broker_url: str | None) -> None:
    """`queued` records whose message is in no queue and no worker's hands: resent (a broker restart lost it).

    Records still in the broker are left alone however long they wait, so a long queue is never flooded.
    When the broker cannot be read, the old rule applies: resent once after BACKUPS_QUEUED_TIMEOUT_SECONDS.
    """
    lost_cutoff = now - timedelta(seconds=backups_settings.BACKUPS_LOST_MESSAGE_SECONDS)
    stale = list(BackupRecord.objects.filter(
        Q(enqueued_at__lt=lost_cutoff) | Q(enqueued_at__isnull=True, created_at__lt=lost_cutoff),
        status=BackupRecord.Status.QUEUED).order_by("pk"))
    if not stale:
        return
    from tasks.queues import DISPATCH, DUMP, DUMP_PRIORITY

    present = record_ids_in_broker((DISPATCH, DUMP, DUMP_PRIORITY), url=broker_url)
    if present is None:
        queued_cutoff = now - timedelta(seconds=backups_settings.BACKUPS_QUEUED_TIMEOUT_SECONDS)
        for record in stale:
            if (record.enqueued_at or record.created_at) < queued_cutoff:
                with transaction.atomic():
                    _requeue_or_fail(record, "Its task message was never picked up (the broker may have lost it)",
                                     result)
        return
    lost = [record for record in stale if record.pk not in present]
    for record in lost:
        with transaction.atomic():
            if backup_record_mark_resent_if_queued(
                    record=record, error=record.error or "Its task message was lost by the broker; sent again."):
                backups_enqueue([record])
                result.requeued.append(record.pk)


def reap_stuck_backups(*, now: datetime | None = None, broker_url: str | None = None) -> Reaped:
    """Resend work dead workers and lost messages left (backups and restore jobs); finish interrupted deletions;
    remove dead uploads."""
    now = now or timezone.now()
    result = Reaped()
    _reap_running(now, result)
    _reap_queued(now, result, broker_url)
    jobs = restore_jobs_reap(now=now, broker_url=broker_url)
    result.requeued_restore_jobs, result.failed_restore_jobs = jobs.requeued, jobs.failed
    result.finished_deletions = finish_interrupted_deletions()
    result.aborted_uploads = abort_stale_uploads()
    leftovers = leftovers_remove()
    result.removed_spool_files, result.dropped_scratch_databases = leftovers.spool_files, leftovers.scratch_databases
    if result.requeued or result.failed:
        logger.warning("reaper requeued %s, failed %s", result.requeued, result.failed)
    return result
