"""Restore jobs a dead worker or a lost broker message left behind: sent again, or failed saying why.

A queued or running RestoreJob refuses every later restore of its tenant and keeps it out of the drills, so a
job nobody runs any more must not stay: a `running` job whose advisory lock is free (its worker died or lost
its database connection) is sent again once, then failed; a `queued` job whose message is in no queue and no
live worker's hands (a diskless Redis restart) is sent again. What the reaper did is kept in the job's report
under REQUEUED, which is also how it knows a job was already sent once more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from backups.conf import backups_settings
from backups.housekeeping.broker_scan import restore_job_ids_in_broker
from backups.models import RestoreJob
from backups.postgres.locks import advisory_lock
from backups.queues import RESTORE_BACKUP, signature
from backups.restore.drills import drill_report_failure
from backups.restore.jobs import RESTORE_JOB_NAMESPACE, restore_job_fail

logger = logging.getLogger(__name__)
REQUEUED = "requeued"  # report key: {"at": when last sent again, "why": ..., "left_running": n, "lost": n}


@dataclass
class ReapedJobs:
    """Restore jobs the reaper sent again, and those it gave up on."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def restore_jobs_send(job_ids: list[int]) -> None:
    """Send the jobs' restore_backup messages once the current transaction commits."""
    def send() -> None:
        for pk in job_ids:
            signature(RESTORE_BACKUP, pk).apply_async()

    if job_ids:
        transaction.on_commit(send)


def _note(job: RestoreJob) -> dict:
    return dict((job.report or {}).get(REQUEUED) or {})


def _last_sent(job: RestoreJob) -> datetime:
    """When the job's message was last sent: by the reaper if it resent it, else when the job was created."""
    at = parse_datetime(_note(job).get("at") or "")
    return at if at is not None else job.created_at


def _job_requeue(job: RestoreJob, *, why: str, now: datetime, count: str) -> None:
    """Put the job back to `queued` with the reaper's note (the caller sends it once its lock is released)."""
    note = _note(job)
    note.update(at=now.isoformat(), why=why, **{count: int(note.get(count) or 0) + 1})
    job.status, job.report = RestoreJob.Status.QUEUED, {**(job.report or {}), REQUEUED: note}
    job.save(update_fields=["status", "report"])


def _job_give_up(job: RestoreJob, error: str, reaped: ReapedJobs) -> None:
    """Fail the job for good; a scheduled drill that could never run mails ops like any failed drill."""
    job = restore_job_fail(job=job, error=error)
    reaped.failed.append(job.pk)
    drill_report_failure(job)


def _reap_running_jobs(now: datetime, reaped: ReapedJobs) -> None:
    """`running` jobs whose lock is free: the worker that ran them is gone. Sent again once, then failed.

    restore_job_run takes the lock before it marks a job running and writes the outcome before releasing it,
    so a free lock on a running job means its holder died or could not write; the lock is held here while the
    job is changed, and the message sent only once it is released, so the worker taking it can claim it.
    """
    cutoff = now - timedelta(seconds=backups_settings.BACKUPS_ORPHAN_GRACE_SECONDS)
    for job in RestoreJob.objects.filter(status=RestoreJob.Status.RUNNING, created_at__lt=cutoff).order_by("pk"):
        if job.started_at is not None and job.started_at >= cutoff:
            continue
        resend = False
        with advisory_lock(RESTORE_JOB_NAMESPACE, job.pk, label=f"reaper: restore job {job.pk}") as free:
            if not free:
                continue  # a live worker runs it, however long it takes
            job.refresh_from_db()
            if job.status != RestoreJob.Status.RUNNING:
                continue  # it finished between the query and the lock
            why = (f"The {job.mode} of {job.schema_name} was left running by a worker that stopped or lost its "
                   "database connection")
            if _note(job).get("left_running"):
                _job_give_up(job, f"{why}, again after being sent once more; giving up.", reaped)
                continue
            _job_requeue(job, why=f"{why}; sent again.", now=now, count="left_running")
            resend = True
        if resend:
            restore_jobs_send([job.pk])
            reaped.requeued.append(job.pk)


def _reap_queued_jobs(now: datetime, reaped: ReapedJobs, broker_url: str | None) -> None:
    """`queued` jobs whose message is in no queue and no live worker's hands: sent again.

    Jobs still in the broker are left alone however long they wait. When the broker cannot be read, a job is
    sent again once after BACKUPS_QUEUED_TIMEOUT_SECONDS, and failed if that did not help either.
    """
    lost_cutoff = now - timedelta(seconds=backups_settings.BACKUPS_LOST_MESSAGE_SECONDS)
    stale = [job for job in RestoreJob.objects.filter(status=RestoreJob.Status.QUEUED, created_at__lt=lost_cutoff)
             .order_by("pk") if _last_sent(job) < lost_cutoff]
    if not stale:
        return
    present = restore_job_ids_in_broker(url=broker_url)
    if present is None:
        queued_cutoff = now - timedelta(seconds=backups_settings.BACKUPS_QUEUED_TIMEOUT_SECONDS)
        stale = [job for job in stale if _last_sent(job) < queued_cutoff]
    for job in stale:
        if present is None or job.pk not in present:
            _resend_lost(job, now=now, reaped=reaped, give_up=present is None and bool(_note(job).get("lost")))


def _resend_lost(job: RestoreJob, *, now: datetime, reaped: ReapedJobs, give_up: bool) -> None:
    """Send a queued job's message again (under its lock, so a worker that just took it is left alone)."""
    why = "Its task message was lost by the broker (or never picked up)"
    with advisory_lock(RESTORE_JOB_NAMESPACE, job.pk, label=f"reaper: restore job {job.pk}") as free:
        if not free:
            return
        job.refresh_from_db()
        if job.status != RestoreJob.Status.QUEUED:
            return
        if give_up:
            _job_give_up(job, f"{why}, again after being sent once more; giving up.", reaped)
            return
        _job_requeue(job, why=f"{why}; sent again.", now=now, count="lost")
    restore_jobs_send([job.pk])
    reaped.requeued.append(job.pk)


def restore_jobs_reap(*, now: datetime | None = None, broker_url: str | None = None) -> ReapedJobs:
    """Send again (or fail) the restore jobs dead workers and lost messages left behind."""
    now = now or timezone.now()
    reaped = ReapedJobs()
    _reap_running_jobs(now, reaped)
    _reap_queued_jobs(now, reaped, broker_url)
    if reaped.requeued or reaped.failed:
        logger.warning("reaper sent restore jobs %s again, failed %s", reaped.requeued, reaped.failed)
    return reaped
