"""One cron pass (`run_scheduled_backups`): every due tenant backed up in this process, as the workers would.

The same rules as the Celery path: the dispatcher's claim (repeated until nothing due is left: one claim takes at
most BACKUPS_DISPATCH_BATCH tenants, and an hourly cron that stopped there would leave the rest an hour late),
batches sized by `batch_sizes` and run side by side on BACKUPS_MAX_CONCURRENT_DUMPS threads (each takes a dump slot
as a worker does), members a batch hands back retried alone (a batch of one); the pipeline does each success's
after-success.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django_tenants.utils import get_tenant_model

from backups.backup.batch.run import batch_backup_run, batch_sizes, batching_enabled
from backups.conf import backups_settings
from backups.schedule.dispatch import NewBackup, dispatch_due_backups

Say = Callable[[str], None]


@dataclass
class CronPass:
    """What the pass claimed and what it could not schedule."""

    created: list[NewBackup] = field(default_factory=list)
    claims: int = 0
    skipped_unmigrated: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)  # record id -> a transient error that left it queued
    labels: dict[int, str] = field(default_factory=dict)  # record id -> its tenant as a person names it


def tenant_label(tenant: Any, schema: str) -> str:
    """How the tenant is named to a person: its name and its schema (`Clínica Sonrisa (clinica_sonrisa)`)."""
    name = str(tenant) if tenant is not None else ""
    if not name or name == schema:
        return schema
    return name if f"({schema})" in name else f"{name} ({schema})"


def tenant_labels(records: list[NewBackup]) -> dict[int, str]:
    """Each record's tenant label, by record id (one query for all of them)."""
    tenants = get_tenant_model().objects.in_bulk([r.tenant_id for r in records if r.tenant_id])
    return {r.pk: tenant_label(tenants.get(r.tenant_id), r.schema_name) for r in records}


def claim_everything_due() -> CronPass:
    """Claim until a claim comes back short (everything due is recorded) or creates nothing (what is left is
    tenants that cannot be scheduled, which stay due and are reported)."""
    found = CronPass()
    limit = backups_settings.BACKUPS_DISPATCH_BATCH
    while True:
        dispatch = dispatch_due_backups(enqueue=False)
        found.claims += 1
        found.created += dispatch.created
        found.skipped_unmigrated = sorted(set(found.skipped_unmigrated) | set(dispatch.skipped_unmigrated))
        found.broken.update(dispatch.broken)
        if dispatch.claimed < limit or not dispatch.created:
            return found


def cron_backup_pass(*, say: Say = lambda line: None) -> CronPass:
    """Claim every due tenant, then back them all up; `say` gets a line per step for the command's output."""
    found = claim_everything_due()
    found.labels = tenant_labels(found.created)
    ids = [new.pk for new in found.created]
    if batching_enabled() and len(ids) > 1:
        _batched(ids, found, say)
    else:
        for new in found.created:
            say(f"Starting backup for {found.labels[new.pk]}...")
            _alone(new.pk, found)
    return found


def _batched(ids: list[int], found: CronPass, say: Say) -> None:
    size = batch_sizes(len(ids))
    parts = [ids[start:start + size] for start in range(0, len(ids), size)]
    slots = max(1, backups_settings.BACKUPS_MAX_CONCURRENT_DUMPS)
    say(f"Backing up {len(ids)} tenants in {len(parts)} batch(es), {min(slots, len(parts))} at a time...")

    def run(part: list[int]) -> list[int]:
        try:
            return batch_backup_run(record_ids=part).retry
        finally:
            connections.close_all()  # this thread's connections, not the command's

    with ThreadPoolExecutor(max_workers=min(slots, len(parts)), thread_name_prefix="cron-batch") as pool:
        for retry in pool.map(run, parts):
            for record_id in retry:
                _alone(record_id, found)


def _alone(record_id: int, found: CronPass) -> None:
    """A batch of one; a transient error leaves it queued for the next run, with why."""
    try:
        result = batch_backup_run(record_ids=[record_id])
    except Exception as exc:  # noqa: BLE001 - one tenant's unexpected failure (already recorded) never ends the pass
        found.errors[record_id] = str(exc)
        return
    if record_id in result.retry:
        found.errors[record_id] = result.errors.get(record_id, "")
